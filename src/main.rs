use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = crmchat::cli::Cli::parse();
    crmchat::cli::init_tracing();
    match crmchat::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("crmchat: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
