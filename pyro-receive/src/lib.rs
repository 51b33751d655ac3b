//! pyro-receive (skeleton, being built).
