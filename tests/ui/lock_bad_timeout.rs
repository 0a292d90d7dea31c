#[dref::lock("daily-report", timeout = "5 parsecs")]
async fn daily_report() -> dref::Result<()> {
    Ok(())
}

fn main() {
    let _ = daily_report();
}
