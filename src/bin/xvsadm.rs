//! `xvsadm`: ipvsadm-compatible administration of xvsd. All logic lives in `xvs::cli`.

fn main() {
    std::process::exit(xvs::cli::main());
}
