#[dref::lock("daily-report", timeout = "5s", timeout = "10s")]
async fn daily_report() -> dref::Result<()> {
    Ok(())
}

fn main() {
    let _ = daily_report();
}
