#[dref::lock("daily-report", ctx = "localhost:6379")]
async fn daily_report() -> dref::Result<()> {
    Ok(())
}

fn main() {
    let _ = daily_report();
}
