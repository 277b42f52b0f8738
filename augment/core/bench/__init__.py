"""The benchmark's method: where choices are made (val or k-fold), the job list, and statistics."""
