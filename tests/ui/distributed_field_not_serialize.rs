use dref::distributed;
use serde::Deserialize;

// Forgot `Serialize`.
#[derive(Clone, PartialEq, Deserialize)]
struct Limits {
    max: u32,
}

#[distributed]
#[derive(Clone)]
struct Settings {
    name: String,
    limits: Vec<Limits>,
}

fn main() {}
