//! Real programs from Debian packages, run under each allocator like the
//! synthetic workloads: python3, sqlite3, lua5.4 and zstd on inputs of ours
//! (`bench/programs/`, a generated file), a C++ program of ours, and
//! redis-server driven by redis-benchmark over loopback. Each run's output
//! is reduced to a checksum, which must match the other allocators'.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::catalogue::{Program, Workload};
use super::peers::{Allocator, apt_install};

/// A real program: the executable it needs and the package that ships it.
struct Real {
    name: &'static str,
    executables: &'static [&'static str],
    package: &'static str,
}

const REAL: [Real; 6] = [
    Real { name: "python3", executables: &["/usr/bin/python3"], package: "python3" },
    Real { name: "sqlite3", executables: &["/usr/bin/sqlite3"], package: "sqlite3" },
    Real {
        name: "redis",
        executables: &["/usr/bin/redis-server", "/usr/bin/redis-benchmark"],
        package: "redis-server redis-tools",
    },
    Real { name: "lua5.4", executables: &["/usr/bin/lua5.4"], package: "lua5.4" },
    Real { name: "cpp", executables: &["/usr/bin/g++"], package: "g++" },
    Real { name: "zstd", executables: &["/usr/bin/zstd"], package: "zstd" },
];

fn missing(real: &Real) -> bool {
    real.executables.iter().any(|e| !Path::new(e).exists())
}

/// Installs with apt what the selected real programs lack; returns the ones
/// still missing as `(name, why)`.
pub fn install(workloads: &[&Workload]) -> Vec<(&'static str, String)> {
    let wanted: Vec<&Real> =
        REAL.iter().filter(|r| workloads.iter().any(|w| w.program == Program::Real(r.name)) && missing(r)).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let packages: Vec<&str> = wanted.iter().flat_map(|r| r.package.split(' ')).collect();
    eprintln!("installing the real programs with apt-get: {}", packages.join(" "));
    if !apt_install(&packages, false) {
        apt_install(&packages, true);
    }
    wanted
        .into_iter()
        .filter(|r| missing(r))
        .map(|r| {
            (
                r.name,
                format!(
                    "{} not found and `apt-get install {}` did not provide it",
                    r.executables.join(", "),
                    r.package
                ),
            )
        })
        .collect()
}

/// The inputs the real programs read, made once before the rounds.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// `bench/programs/`.
    scripts: PathBuf,
    /// Where the generated inputs and outputs go.
    dir: PathBuf,
    /// The C++ program, built.
    cpp: PathBuf,
    /// Work per run.
    scale: f64,
}

/// Writes the real programs' inputs for `scale` under `dir` and builds the
/// C++ program into `profile_dir`.
pub fn prepare(workspace: &Path, profile_dir: &Path, dir: &Path, scale: f64) -> Result<Inputs, String> {
    let scripts = workspace.join("bench/programs");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rows = ((1_500_000.0 * scale) as u64).max(2000);
    let sql = std::fs::read_to_string(scripts.join("sqlite.sql")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("sqlite.sql"), sql.replace("ROWS", &rows.to_string())).map_err(|e| e.to_string())?;
    let cpp = profile_dir.join("bench-cpp-churn");
    if Path::new("/usr/bin/g++").exists() {
        let built = Command::new("g++")
            .args(["-O2", "-std=c++17", "-o"])
            .arg(&cpp)
            .arg(scripts.join("churn.cpp"))
            .status()
            .map_err(|e| format!("g++: {e}"))?;
        if !built.success() {
            return Err("compiling bench/programs/churn.cpp failed".into());
        }
    }
    write_text(&dir.join("zstd-input"), ((288.0 * scale).max(2.0) * 1048576.0) as usize)?;
    Ok(Inputs { scripts, dir: dir.into(), cpp, scale })
}

/// A text file of `bytes` bytes: words drawn from a small vocabulary by a
/// fixed generator, compressible like a log, the same on every run.
fn write_text(path: &Path, bytes: usize) -> Result<(), String> {
    const WORDS: [&str; 16] = [
        "alloc", "free", "span", "slab", "cpu", "page", "segment", "class", "remote", "local", "drain", "refill",
        "trim", "huge", "small", "batch",
    ];
    let mut text = String::with_capacity(bytes + 64);
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    while text.len() < bytes {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        text.push_str(WORDS[(s % 16) as usize]);
        text.push(if s.is_multiple_of(11) { '\n' } else { ' ' });
        if s.is_multiple_of(97) {
            text.push_str(&(s % 100_000).to_string());
        }
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What a real program's run is: the command line, its environment, and
/// the file its output goes to when it is not stdout.
pub struct Invocation {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment added.
    pub env: Vec<(&'static str, String)>,
    /// The output file whose contents are the checksum, if any.
    pub output: Option<PathBuf>,
}

/// The command line of the real program `name` (not `redis`, which has a
/// driver of its own: [`redis`]).
pub fn invocation(name: &str, inputs: &Inputs) -> Result<Invocation, String> {
    let scale = inputs.scale.to_string();
    let script = |file: &str| inputs.scripts.join(file).display().to_string();
    let plain = |argv: Vec<String>| Invocation { argv, env: Vec::new(), output: None };
    Ok(match name {
        "python3" => Invocation {
            argv: vec!["/usr/bin/python3".into(), script("churn.py"), scale],
            env: vec![("PYTHONMALLOC", "malloc".into())],
            output: None,
        },
        "sqlite3" => plain(vec![
            "/usr/bin/sqlite3".into(),
            ":memory:".into(),
            format!(".read {}", inputs.dir.join("sqlite.sql").display()),
        ]),
        "lua5.4" => plain(vec!["/usr/bin/lua5.4".into(), script("gc.lua"), scale]),
        "cpp" => plain(vec![inputs.cpp.display().to_string(), scale]),
        "zstd" => {
            let output = inputs.dir.join("zstd-output.zst");
            Invocation {
                argv: vec![
                    "/usr/bin/zstd".into(),
                    "-T2".into(),
                    "-6".into(),
                    "-q".into(),
                    "-f".into(),
                    inputs.dir.join("zstd-input").display().to_string(),
                    "-o".into(),
                    output.display().to_string(),
                ],
                env: Vec::new(),
                output: Some(output),
            }
        }
        other => return Err(format!("no real program called {other}")),
    })
}

/// FNV-1a over `bytes`: a checksum of a program's output.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The checksum of a real program's run: its own `checksum` line, else a
/// hash of its output file, else of its stdout without the launcher's line.
pub fn checksum(stdout: &str, output: Option<&Path>) -> Result<String, String> {
    if let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("checksum ")) {
        return Ok(line.trim().to_string());
    }
    if let Some(path) = output {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(format!("{:016x}", fnv(&bytes)));
    }
    let own: String = stdout.lines().filter(|l| !l.starts_with("rusage ")).flat_map(|l| [l, "\n"]).collect();
    Ok(format!("{:016x}", fnv(own.as_bytes())))
}

/// A loopback port nothing listens on now, for redis-server: the kernel
/// picks it, so that two runs (or another redis) on the machine do not meet.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// One redis command over the connection, its reply as text (RESP inline).
fn redis_command(stream: &mut TcpStream, command: &str) -> Result<String, String> {
    stream.write_all(format!("{command}\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}

/// What a redis run measured: the benchmark's wall time, requests per
/// second per test, the checksum of the data it left, and the server's
/// launcher output (its rusage).
pub struct RedisRun {
    /// Seconds the benchmarks took.
    pub wall: f64,
    /// (test, requests per second).
    pub rates: Vec<(String, f64)>,
    /// The keys and the list length it left, as one line.
    pub checksum: String,
    /// The launcher's stdout.
    pub server_stdout: String,
}

/// Runs redis-server under the launcher (`measure`) with `allocator`,
/// drives it with redis-benchmark (SET, GET, LPUSH, LRANGE_100, pipelined
/// 16 deep, values of 64 B and 1 KiB), reads what it holds, shuts it down.
pub fn redis(measure: &Path, allocator: &Allocator, scale: f64) -> Result<RedisRun, String> {
    let port = free_port()?;
    let mut server = Command::new(measure);
    server
        .args(["/usr/bin/redis-server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning", "--protected-mode", "no"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(library) = &allocator.preload {
        server.env("MEASURE_PRELOAD", library);
    }
    let mut child = server.spawn().map_err(|e| format!("spawn redis-server: {e}"))?;
    let started = Instant::now();
    let mut stream = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port))
            && redis_command(&mut s, "PING").is_ok_and(|r| r == "+PONG")
        {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) || child.try_wait().is_ok_and(|s| s.is_some()) {
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
            let _ = child.wait();
            return Err(format!("redis-server did not answer: {}", stderr.trim()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let requests = ((60_000.0 * scale) as u64).max(2000).to_string();
    let mut rates = Vec::new();
    let timer = Instant::now();
    let mut failure = None;
    for size in ["64", "1024"] {
        let out = Command::new("/usr/bin/redis-benchmark")
            .args(["-p", &port.to_string(), "-n", &requests, "-P", "16", "-c", "20", "-d", size])
            .args(["-t", "set,get,lpush,lrange_100", "--csv"])
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    let cells: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
                    // "LPUSH (needed to benchmark LRANGE)" repeats LPUSH.
                    let test = cells.first().filter(|t| !t.contains("needed")).and_then(|t| t.split(' ').next());
                    if let (Some(test), Some(Ok(rps))) = (test, cells.get(1).map(|r| r.parse::<f64>())) {
                        rates.push((format!("{test} {size} B"), rps));
                    }
                }
            }
            Ok(o) => failure = Some(format!("redis-benchmark exited with {}", o.status)),
            Err(e) => failure = Some(format!("redis-benchmark: {e}")),
        }
    }
    let wall = timer.elapsed().as_secs_f64();
    let checksum = ["DBSIZE", "LLEN mylist", "STRLEN key:__rand_int__"]
        .iter()
        .map(|c| redis_command(&mut stream, c))
        .collect::<Result<Vec<_>, _>>()
        .map(|r| r.join(" "));
    let _ = stream.write_all(b"SHUTDOWN NOSAVE\r\n");
    let output = child.wait_with_output().map_err(|e| format!("redis-server: {e}"))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(RedisRun { wall, rates, checksum: checksum?, server_stdout: String::from_utf8_lossy(&output.stdout).into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program's own checksum line wins; otherwise its stdout is hashed
    /// without the launcher's rusage line, whose times differ run to run.
    #[test]
    fn the_checksum_ignores_the_launchers_line() {
        assert_eq!(checksum("x\nchecksum 42\nrusage maxrss_kib 1\n", None).unwrap(), "42");
        let a = checksum("1|2\n3|4\nrusage maxrss_kib 10 user_us 5 sys_us 1\n", None).unwrap();
        let b = checksum("1|2\n3|4\nrusage maxrss_kib 99 user_us 7 sys_us 0\n", None).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, checksum("1|2\n3|5\n", None).unwrap());
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
    }
}
