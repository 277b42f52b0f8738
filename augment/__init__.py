"""Expand a scarce labeled image dataset and measure, honestly, whether it helped.

Plain functions over arrays and one run directory; no Prefect import anywhere in this package
(the flows/ package wraps the stages as Prefect tasks).
"""

__version__ = "0.1.0"
