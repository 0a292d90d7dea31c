use dref::distributed;

#[distributed(name = "flags")]
#[derive(Clone)]
struct Flags {
    rollout: u8,
}

fn main() {}
