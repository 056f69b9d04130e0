//! Ready-made parts for common runtimes and HTTP clients, behind cargo features.
