use dref::distributed;

#[distributed]
#[derive(Clone)]
struct Flags {
    #[dref(flatten)]
    rollout: u8,
}

fn main() {}
