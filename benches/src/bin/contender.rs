//! One loopback workload in a process of its own, so that it can run under
//! the `TCP_NODELAY` shim (`LD_PRELOAD`) and its CPU time is its own.
//!
//! usage: contender postern|postern-pipelined|lettre|mail-send PORT SESSIONS PER_SESSION
//!
//! Prints `ELAPSED_NS CPU_US`: wall time and user + system CPU time of the
//! sends alone (runtime start-up and process exit excluded).

use std::sync::Arc;
use std::time::Instant;

use postern_benches::workloads;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, port, sessions, per_session] = args.as_slice() else {
        return Err(
            "usage: contender postern|postern-pipelined|lettre|mail-send PORT SESSIONS PER_SESSION"
                .into(),
        );
    };
    let (port, sessions, per_session): (u16, usize, usize) =
        (port.parse()?, sessions.parse()?, per_session.parse()?);
    let body: Arc<[u8]> = workloads::message().into();
    let rt = workloads::runtime();
    let cpu = workloads::cpu_self_us();
    let start = Instant::now();
    match name.as_str() {
        "postern" => rt.block_on(workloads::postern(port, sessions, per_session, body)),
        "postern-pipelined" => rt.block_on(workloads::postern_pipelined(
            port,
            sessions,
            per_session,
            body,
        )),
        "lettre" => rt.block_on(workloads::lettre(port, sessions, per_session, body)),
        "mail-send" => rt.block_on(workloads::mail_send(port, sessions, per_session, body)),
        other => return Err(format!("unknown contender {other}").into()),
    }
    let elapsed = start.elapsed();
    let cpu = workloads::cpu_self_us() - cpu;
    let mut out = std::io::stdout().lock();
    std::io::Write::write_fmt(&mut out, format_args!("{} {cpu}\n", elapsed.as_nanos()))?;
    Ok(())
}
