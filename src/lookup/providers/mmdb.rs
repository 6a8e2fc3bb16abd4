//! Offline MaxMind DB provider (placeholder, being written).
