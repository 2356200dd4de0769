//! The pause image: the sandbox container whose network namespace a pod's containers join.
//!
//! There is no registry to pull `registry.k8s.io/pause` from and no static binary on the
//! machine to copy, so the runtime writes the executable itself: a static x86_64 Linux ELF of
//! 178 bytes (a 64-byte header, one 56-byte program header, 58 bytes of code), built into a
//! `FROM scratch` image the first time a sandbox is needed.
//!
//! The program blocks SIGTERM and SIGINT and waits for one of them with `rt_sigtimedwait`,
//! then exits 0. Waiting on a blocked signal (instead of `pause()` with the default
//! disposition) is what makes `docker stop` end it at once: PID 1 of a PID namespace is not
//! killed by signals it has no handler for, so a plain `pause()` loop would only die by the
//! SIGKILL at the end of the grace period.

use std::io;

/// The image's name; `build_context` is what it is built from.
pub const PAUSE_IMAGE: &str = "trireme/pause:1";

/// The Docker platform architecture the executable runs on.
pub const PAUSE_ARCH: &str = "amd64";

/// Where the program is loaded; the code follows the two headers.
const LOAD_ADDRESS: u64 = 0x40_0000;
const ELF_HEADER_SIZE: u16 = 64;
const PROGRAM_HEADER_SIZE: u16 = 56;

/// The machine code (`as` + `objdump -d -M intel`):
///
/// ```text
///  0: 68 02 40 00 00        push   0x4002          ; the sigset on the stack: bits of SIGINT (2) and SIGTERM (15)
///  5: 48 89 e6              mov    rsi,rsp         ; set
///  8: 31 ff                 xor    edi,edi         ; how = SIG_BLOCK
///  a: 31 d2                 xor    edx,edx         ; oldset = NULL
///  c: 41 ba 08 00 00 00     mov    r10d,0x8        ; sigsetsize
/// 12: b8 0e 00 00 00        mov    eax,0xe         ; rt_sigprocmask
/// 17: 0f 05                 syscall
/// wait:
/// 19: 48 89 e7              mov    rdi,rsp         ; set
/// 1c: 31 f6                 xor    esi,esi         ; info = NULL
/// 1e: 31 d2                 xor    edx,edx         ; timeout = NULL: wait forever
/// 20: 41 ba 08 00 00 00     mov    r10d,0x8        ; sigsetsize
/// 26: b8 80 00 00 00        mov    eax,0x80        ; rt_sigtimedwait
/// 2b: 0f 05                 syscall
/// 2d: 85 c0                 test   eax,eax
/// 2f: 78 e8                 js     19 <wait>       ; -EINTR (a stop/continue): wait again
/// 31: 31 ff                 xor    edi,edi         ; status 0
/// 33: b8 e7 00 00 00        mov    eax,0xe7        ; exit_group
/// 38: 0f 05                 syscall
/// ```
const CODE: [u8; 58] = [
    0x68, 0x02, 0x40, 0x00, 0x00, //
    0x48, 0x89, 0xe6, //
    0x31, 0xff, //
    0x31, 0xd2, //
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, //
    0xb8, 0x0e, 0x00, 0x00, 0x00, //
    0x0f, 0x05, //
    0x48, 0x89, 0xe7, //
    0x31, 0xf6, //
    0x31, 0xd2, //
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, //
    0xb8, 0x80, 0x00, 0x00, 0x00, //
    0x0f, 0x05, //
    0x85, 0xc0, //
    0x78, 0xe8, //
    0x31, 0xff, //
    0xb8, 0xe7, 0x00, 0x00, 0x00, //
    0x0f, 0x05, //
];

/// The pause executable: an ELF header, one loadable read+execute segment covering the whole
/// file, and [`CODE`] as its entry point.
pub fn pause_executable() -> Vec<u8> {
    let code_offset = u64::from(ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE);
    let file_size = code_offset + CODE.len() as u64;
    let mut elf = Vec::with_capacity(file_size as usize);
    // ELF header.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F']);
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V ABI
    elf.extend_from_slice(&[0; 8]); // ABI version and padding
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(LOAD_ADDRESS + code_offset).to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(ELF_HEADER_SIZE).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&ELF_HEADER_SIZE.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&PROGRAM_HEADER_SIZE.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    // Program header: PT_LOAD, R+X, the whole file at LOAD_ADDRESS.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: PF_R | PF_X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&file_size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&file_size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&CODE);
    elf
}

/// The build context of [`PAUSE_IMAGE`]: a tar of a Dockerfile and the executable.
pub fn build_context() -> io::Result<Vec<u8>> {
    let dockerfile = "FROM scratch\nCOPY pause /pause\nENTRYPOINT [\"/pause\"]\n";
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "Dockerfile", 0o644, dockerfile.as_bytes())?;
    append_file(&mut tar, "pause", 0o755, &pause_executable())?;
    tar.into_inner()
}

/// Adds one regular file to an in-memory tar.
pub fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    #[test]
    fn the_pause_executable_waits_for_sigterm_and_exits_zero() -> anyhow::Result<()> {
        assert_eq!(pause_executable().len(), 178);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pause");
        std::fs::write(&path, pause_executable())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let mut child = std::process::Command::new(&path).spawn()?;
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait()?.is_none(), "pause exited before it was told to");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            anyhow::ensure!(Instant::now() < deadline, "pause ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!((status.code(), status.signal()), (Some(0), None));
        Ok(())
    }
}
