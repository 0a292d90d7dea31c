use dref::distributed;
use serde::{Deserialize, Serialize};

#[distributed]
#[derive(Clone, Serialize, Deserialize)]
struct Flags {
    rollout: u8,
}

fn main() {}
