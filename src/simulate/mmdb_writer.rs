//! MMDB writer (being written).
