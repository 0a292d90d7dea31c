use dref::distributed;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Limits {
    max: u32,
}

#[distributed]
#[derive(Clone)]
struct Settings {
    name: String,
    limits: Limits,
}

fn main() {}
