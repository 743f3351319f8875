//! netsim (in progress).
