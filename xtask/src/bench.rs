pub fn bench(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
#[derive(clap::Args)]
pub struct BenchArgs {}
