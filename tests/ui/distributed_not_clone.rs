use dref::distributed;

#[distributed]
struct Flags {
    rollout: u8,
}

fn main() {}
