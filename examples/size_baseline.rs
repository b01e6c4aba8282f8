//! Baseline for `benches/binary_size.sh`: the same program as `size_emitter` without spanline.
use std::io::Write;

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "service-egress {arg} http.method=POST peer.service=lambda"
    );
}
