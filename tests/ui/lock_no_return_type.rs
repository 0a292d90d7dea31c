#[dref::lock("daily-report")]
async fn daily_report() {}

fn main() {
    let _ = daily_report();
}
