#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = match crmchat::cli::parse() {
        crmchat::cli::Parsed::Run(cli) => cli,
        crmchat::cli::Parsed::PrintConfig(text) => {
            print!("{text}");
            return std::process::ExitCode::SUCCESS;
        }
    };
    crmchat::cli::init_tracing();
    match crmchat::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("crmchat: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
