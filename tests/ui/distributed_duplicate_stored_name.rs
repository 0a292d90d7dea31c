use dref::distributed;

#[distributed]
#[derive(Clone)]
struct Flags {
    rollout: u8,
    #[dref(rename = "rollout")]
    rollout_v2: u16,
}

fn main() {}
