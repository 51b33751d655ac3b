//! pyro-discovery (skeleton, being built).
