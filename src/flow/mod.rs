//! The residual flow (SPEC sections 4 and 5).
