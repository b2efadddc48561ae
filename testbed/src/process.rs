//! Processes under test (the allocator, the node agent) that must not outlive
//! the test binary, even when it is SIGKILLed.
//!
//! The kernel's parent-death signal fires when the *thread* that forked the
//! child exits, and test threads come and go; so every child is forked from
//! one thread that lives as long as the process.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testbed-spawner".to_owned())
            .spawn(move || {
                let parent = std::process::id();
                for (mut command, reply) in rx {
                    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of ours.
                    unsafe {
                        command.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            // The parent may have died before the signal was armed.
                            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                                return Err(std::io::Error::other("the test process is gone"));
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("cannot start the testbed spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// A child process that is SIGKILLed when dropped, and by the kernel when the
/// test process dies.
pub struct BoundChild {
    child: Child,
}

impl BoundChild {
    /// Spawns `command`, bound to this process's lifetime.
    pub fn spawn(command: Command) -> std::io::Result<Self> {
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send((command, reply_tx))
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        let child = reply_rx
            .recv()
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))??;
        Ok(Self { child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(std::io::Error::other)?;
        // SAFETY: plain kill(2) on our own child.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.child.wait()
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for BoundChild {
    fn drop(&mut self) {
        self.kill();
    }
}
