//! `shoal service logs` lines: docker's prefix (`web.1.abc123def456@node1    | `), timestamps
//! in front with `-t`, nothing but the line with `--raw`.

use std::collections::HashMap;

use shoal_proto::v1::{LogLine, LogTask};

/// How lines are printed (the flags of `service logs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogFormat {
    pub timestamps: bool,
    pub raw: bool,
    pub no_task_ids: bool,
    pub no_trunc: bool,
}

/// The tasks lines came from, as the manager described them.
#[derive(Default)]
pub struct LogTasks {
    tasks: HashMap<String, LogTask>,
}

impl LogTasks {
    pub fn learn(&mut self, tasks: Vec<LogTask>) {
        for task in tasks {
            self.tasks.insert(task.task_id.clone(), task);
        }
    }

    /// The text printed for `line`, with its newline.
    pub fn format(&self, line: &LogLine, format: LogFormat) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.data.len() + 64);
        if format.timestamps {
            out.extend_from_slice(crate::timefmt::format_timestamp_nanos(line.time_unix_nanos).as_bytes());
            out.push(b' ');
        }
        if !format.raw {
            out.extend_from_slice(self.prefix(&line.task_id, format).as_bytes());
            out.extend_from_slice(b"    | ");
        }
        out.extend_from_slice(&line.data);
        out.push(b'\n');
        out
    }

    /// `service.slot.taskid@hostname`, padded as docker pads it: by the digits the slot lacks
    /// against the replica count, so lines of `web.1` and `web.10` line up.
    fn prefix(&self, task_id: &str, format: LogFormat) -> String {
        let Some(task) = self.tasks.get(task_id) else {
            // Not described (cannot happen with a current manager): the id alone.
            return task_id.to_string();
        };
        let mut name = if task.slot > 0 {
            format!("{}.{}", task.service_name, task.slot)
        } else {
            format!("{}.{}", task.service_name, task.node_id)
        };
        if !format.no_task_ids {
            let id =
                if format.no_trunc { task.task_id.as_str() } else { task.task_id.get(..12).unwrap_or(&task.task_id) };
            name.push('.');
            name.push_str(id);
        }
        let node = if task.node_hostname.is_empty() { &task.node_id } else { &task.node_hostname };
        let padding = if task.slot > 0 { digits(task.replicas).saturating_sub(digits(task.slot)) } else { 0 };
        format!("{name}@{node}{}", " ".repeat(padding))
    }
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> LogTasks {
        let mut tasks = LogTasks::default();
        let task = |id: &str, slot, replicas| LogTask {
            task_id: id.into(),
            service_name: "web".into(),
            slot,
            node_id: "nodeid1".into(),
            node_hostname: "node1".into(),
            replicas,
        };
        tasks.learn(vec![task("abcdefghijklmnopqrstuvwxy", 1, 10), task("zyxwvutsrqponmlkjihgfedcb", 10, 10)]);
        tasks.learn(vec![LogTask { slot: 0, replicas: 0, ..task("globaltask00000000000000", 0, 0) }]);
        tasks
    }

    fn line(task: &str, data: &str) -> LogLine {
        LogLine { task_id: task.into(), stream: 0, time_unix_nanos: 1_700_000_000_000_000_123, data: data.into() }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_carry_docker_s_prefix_padded_to_the_replica_count() {
        let tasks = tasks();
        let plain = LogFormat::default();
        assert_eq!(
            text(tasks.format(&line("abcdefghijklmnopqrstuvwxy", "hello"), plain)),
            "web.1.abcdefghijkl@node1     | hello\n"
        );
        assert_eq!(
            text(tasks.format(&line("zyxwvutsrqponmlkjihgfedcb", "hi"), plain)),
            "web.10.zyxwvutsrqpo@node1    | hi\n"
        );
        assert_eq!(
            text(tasks.format(&line("globaltask00000000000000", "g"), plain)),
            "web.nodeid1.globaltask00@node1    | g\n",
            "a global task is named by its node, as in service ps"
        );
    }

    #[test]
    fn flags_change_the_prefix_as_docker_s_do() {
        let tasks = tasks();
        let l = line("zyxwvutsrqponmlkjihgfedcb", "hi");
        let no_ids = LogFormat { no_task_ids: true, ..LogFormat::default() };
        assert_eq!(text(tasks.format(&l, no_ids)), "web.10@node1    | hi\n");
        let full = LogFormat { no_trunc: true, ..LogFormat::default() };
        assert_eq!(text(tasks.format(&l, full)), "web.10.zyxwvutsrqponmlkjihgfedcb@node1    | hi\n");
        let raw = LogFormat { raw: true, ..LogFormat::default() };
        assert_eq!(text(tasks.format(&l, raw)), "hi\n");
        let stamped = LogFormat { timestamps: true, ..LogFormat::default() };
        assert_eq!(
            text(tasks.format(&l, stamped)),
            "2023-11-14T22:13:20.000000123Z web.10.zyxwvutsrqpo@node1    | hi\n"
        );
        let raw_stamped = LogFormat { timestamps: true, raw: true, ..LogFormat::default() };
        assert_eq!(text(tasks.format(&l, raw_stamped)), "2023-11-14T22:13:20.000000123Z hi\n");
    }
}
