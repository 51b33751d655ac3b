//! pyro-symbolize (skeleton, being built).
