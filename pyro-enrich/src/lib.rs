//! pyro-enrich (skeleton, being built).
