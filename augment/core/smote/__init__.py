"""SMOTE and its relatives on feature rows (imbalanced-learn), and the feature spaces they run in."""
