//! The receiving side: checking the bearer and parsing pushes.
