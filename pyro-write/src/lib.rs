//! pyro-write (skeleton, being built).
