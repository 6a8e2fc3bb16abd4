//! Secrets (API keys) in a redacting type (placeholder, being written).
