use dref::distributed;

#[distributed(id = "flags", id = "other-flags")]
#[derive(Clone)]
struct Flags {
    rollout: u8,
}

fn main() {}
