#[dref::lock("daily-report")]
async fn daily_report() -> u32 {
    42
}

fn main() {
    let _ = daily_report();
}
