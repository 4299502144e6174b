//! CPU time over a load window, read from Linux procfs: what the server and the generator
//! each spend per event, and how busy the whole machine was. A run whose machine is near
//! 100 % busy is bound by cores, not by waiting; these numbers say so in the table.

use std::time::Instant;

use serde::Serialize;

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    /// The server's user + system ticks, when its pid was given and readable.
    server: Option<u64>,
    /// This process's user + system ticks.
    own: Option<u64>,
    /// The machine's ticks, summed over every core.
    machine: Option<MachineTicks>,
}

/// Ticks of the machine (the `cpu` line of `/proc/stat`), summed over its cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTicks {
    /// Every tick counted.
    pub total: u64,
    /// Ticks neither idle nor waiting for I/O.
    pub busy: u64,
    /// Cores counted (`cpuN` lines).
    pub cores: u32,
}

/// CPU spent over a window, per event and in all.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// Server CPU (user + system) per event answered, milliseconds.
    pub server_ms_per_event: Option<f64>,
    /// The generator's own CPU per event answered, milliseconds.
    pub generator_ms_per_event: Option<f64>,
    /// Share of all cores' time that was busy (any process), percent.
    pub machine_busy_pct: Option<f64>,
    /// Cores of the machine.
    pub cores: Option<u32>,
}

impl Sample {
    /// Read the counters now; `server_pid` is the process under load.
    pub fn now(server_pid: Option<u32>) -> Self {
        let read = |path: String| std::fs::read_to_string(path).ok();
        Self {
            at: Instant::now(),
            server: server_pid
                .and_then(|pid| read(format!("/proc/{pid}/stat")))
                .and_then(|s| process_ticks(&s)),
            own: read("/proc/self/stat".into()).and_then(|s| process_ticks(&s)),
            machine: read("/proc/stat".into()).and_then(|s| machine_ticks(&s)),
        }
    }

    /// What was spent between `self` and `later`, over `events` events.
    pub fn usage_until(&self, later: &Sample, events: usize) -> Usage {
        let machine = self.machine.zip(later.machine).and_then(|(a, b)| {
            let total = b.total.checked_sub(a.total)?;
            let busy = b.busy.checked_sub(a.busy)?;
            (total > 0).then_some((total, busy, b.cores))
        });
        // procfs counts in USER_HZ ticks; the machine's counters over the window give
        // the rate without asking libc: every core ticks `hz` times a second.
        let secs = later.at.duration_since(self.at).as_secs_f64();
        let hz = machine.and_then(|(total, _, cores)| {
            (secs > 0.0 && cores > 0).then(|| total as f64 / (secs * f64::from(cores)))
        });
        let per_event = |a: Option<u64>, b: Option<u64>| -> Option<f64> {
            let ticks = b?.checked_sub(a?)?;
            let hz = hz.filter(|h| *h > 0.0)?;
            (events > 0).then(|| ticks as f64 / hz * 1000.0 / events as f64)
        };
        Usage {
            server_ms_per_event: per_event(self.server, later.server),
            generator_ms_per_event: per_event(self.own, later.own),
            machine_busy_pct: machine.map(|(total, busy, _)| busy as f64 * 100.0 / total as f64),
            cores: machine.map(|(_, _, cores)| cores),
        }
    }
}

/// User + system ticks from a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's ticks from `/proc/stat`: the aggregate `cpu` line, and the cores.
pub fn machine_ticks(stat: &str) -> Option<MachineTicks> {
    let mut lines = stat.lines();
    let first = lines.next()?;
    let mut fields = first.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let cores = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(MachineTicks {
        total,
        busy: total - idle,
        cores: u32::try_from(cores).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_counts_fields_after_the_name() {
        // A name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(process_ticks(stat), Some(1234 + 567));
        assert_eq!(process_ticks("4242 (x) S 1 2"), None);
        assert_eq!(process_ticks("no name here"), None);
    }

    #[test]
    fn machine_ticks_sum_the_cpu_line() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\ncpu1 50 3 25 400 10 2 1 0 0 0\nintr 1 2 3\n";
        let m = machine_ticks(stat).expect("parsed");
        assert_eq!(m.total, 980);
        assert_eq!(m.busy, 980 - 800 - 20);
        assert_eq!(m.cores, 2);
        assert_eq!(machine_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn usage_divides_ticks_by_the_measured_tick_rate() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(2);
        let machine = |total, busy| {
            Some(MachineTicks {
                total,
                busy,
                cores: 2,
            })
        };
        // 2 s on 2 cores at 100 Hz = 400 ticks, 300 of them busy; the server used 150
        // ticks (1.5 s) for 1,000 events, the generator 50 (0.5 s).
        let a = Sample {
            at: t0,
            server: Some(1_000),
            own: Some(10),
            machine: machine(10_000, 4_000),
        };
        let b = Sample {
            at: t1,
            server: Some(1_150),
            own: Some(60),
            machine: machine(10_400, 4_300),
        };
        let u = a.usage_until(&b, 1_000);
        let close = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() < 1e-9);
        assert!(close(u.server_ms_per_event, 1.5), "{u:?}");
        assert!(close(u.generator_ms_per_event, 0.5), "{u:?}");
        assert!(close(u.machine_busy_pct, 75.0), "{u:?}");
        assert_eq!(u.cores, Some(2));
        // No events, or no server pid: nothing per event, the machine still measured.
        let none = Sample { server: None, ..a }.usage_until(&b, 0);
        assert!(none.server_ms_per_event.is_none() && none.generator_ms_per_event.is_none());
        assert!(close(none.machine_busy_pct, 75.0));
    }
}
