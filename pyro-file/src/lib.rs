//! pyro-file (skeleton, being built).
