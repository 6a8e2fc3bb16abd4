//! Reciprocal attacker reporting (being written).
