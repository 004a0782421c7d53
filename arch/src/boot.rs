//! Loading a Linux kernel (ELF vmlinux or bzImage), its initrd and command
//! line into guest memory, and writing the boot data the kernel reads first:
//! the zero page for the Linux boot protocol, or the PVH start info.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

pub use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{self, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, ReadVolatile};

use crate::layout::*;
use crate::memory::{e820_map, low_ram_end};
use crate::regs::EntryMode;

/// Errors while loading the kernel, initrd or boot data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel file could not be read.
    #[error("cannot read the kernel image")]
    ReadKernel(#[source] std::io::Error),
    /// The file is neither an ELF vmlinux nor a bzImage.
    #[error("not a Linux kernel: expected an ELF vmlinux or a bzImage (no ELF magic, no 'HdrS' boot header)")]
    UnknownFormat,
    /// The file looked like a kernel but could not be loaded.
    #[error("invalid {format} kernel image: {source}")]
    Load {
        /// "ELF" or "bzImage".
        format: &'static str,
        /// What linux-loader reported.
        #[source]
        source: loader::Error,
    },
    /// The ELF is not a 64-bit x86 executable.
    #[error("the ELF kernel is not a 64-bit x86 image (class {class}, machine {machine})")]
    WrongElfArch {
        /// EI_CLASS.
        class: u8,
        /// e_machine.
        machine: u16,
    },
    /// The file ends inside the kernel's header.
    #[error("the {format} kernel image is truncated: its header does not fit in its {len} bytes")]
    Truncated {
        /// "ELF" or "bzImage".
        format: &'static str,
        /// How many bytes the file has.
        len: usize,
    },
    /// The bzImage's boot protocol is too old for a 64-bit entry.
    #[error("bzImage boot protocol {0:#x} is older than 2.06, which 64-bit boot needs")]
    OldBootProtocol(u16),
    /// The kernel's segments (with their zero-filled part) run past the
    /// guest RAM they are loaded into.
    #[error("the kernel image ends at {end:#x} in guest memory, past the RAM it is loaded into; give the VM more memory, or check the image's program headers")]
    PastRam {
        /// First byte after the kernel.
        end: u64,
    },
    /// PVH entry requested but the kernel has no PVH note.
    #[error("the kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH or use the Linux boot protocol")]
    NoPvhEntry,
    /// The initrd could not be read.
    #[error("cannot read the initrd")]
    ReadInitrd(#[source] std::io::Error),
    /// The initrd does not fit between the kernel and the end of low RAM.
    #[error("the initrd ({size} bytes) does not fit in guest RAM above the kernel; give the VM more memory")]
    InitrdTooLarge {
        /// Size of the initrd.
        size: u64,
    },
    /// The command line is too long or has invalid characters.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// Writing boot data to guest memory failed.
    #[error("cannot write {0} to guest memory")]
    WriteBootData(&'static str),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Kernel image formats the VMM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF vmlinux.
    Elf,
    /// Compressed x86 boot image.
    BzImage,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const PAGE_SIZE: u64 = 4096;

/// Identifies the kernel format from the first bytes of the image.
pub fn detect_format(head: &[u8]) -> Result<KernelFormat> {
    if head.len() >= 4 && &head[..4] == ELF_MAGIC {
        return Ok(KernelFormat::Elf);
    }
    if head.len() >= BZIMAGE_MAGIC_OFFSET + 4
        && &head[BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4] == BZIMAGE_MAGIC
    {
        return Ok(KernelFormat::BzImage);
    }
    Err(Error::UnknownFormat)
}

/// What loading the kernel produced.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    /// Format of the image.
    pub format: KernelFormat,
    /// Guest address to start executing at.
    pub entry: GuestAddress,
    /// How to enter: Linux 64-bit or PVH.
    pub mode: EntryMode,
    /// First byte after the kernel in guest memory.
    pub end: u64,
    /// The bzImage's setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
}

/// What a kernel image is read from: a file, or bytes in memory.
pub trait KernelImage: Read + Seek + ReadVolatile {}
impl<T: Read + Seek + ReadVolatile> KernelImage for T {}

fn read_head(file: &mut impl KernelImage) -> Result<Vec<u8>> {
    let mut head = vec![0u8; 0x400];
    file.seek(SeekFrom::Start(0)).map_err(Error::ReadKernel)?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(Error::ReadKernel)? {
            0 => break,
            r => n += r,
        }
    }
    head.truncate(n);
    file.seek(SeekFrom::Start(0)).map_err(Error::ReadKernel)?;
    Ok(head)
}

/// Checks that `file` is a kernel this VMM boots, without loading it.
pub fn probe_kernel(file: &mut impl KernelImage) -> Result<KernelFormat> {
    let head = read_head(file)?;
    let format = detect_format(&head)?;
    let truncated = |format| Error::Truncated {
        format,
        len: head.len(),
    };
    match format {
        KernelFormat::Elf => {
            // e_ident[EI_CLASS] == ELFCLASS64, e_machine == EM_X86_64.
            let (Some(&class), Some(&[lo, hi])) = (head.get(4), head.get(18..20)) else {
                return Err(truncated("ELF"));
            };
            let machine = u16::from_le_bytes([lo, hi]);
            if class != 2 || machine != 62 {
                return Err(Error::WrongElfArch { class, machine });
            }
        }
        KernelFormat::BzImage => {
            let Some(&[lo, hi]) = head.get(0x206..0x208) else {
                return Err(truncated("bzImage"));
            };
            let version = u16::from_le_bytes([lo, hi]);
            if version < 0x0206 {
                return Err(Error::OldBootProtocol(version));
            }
        }
    }
    Ok(format)
}

/// Loads the kernel in `file`. With `want_pvh` an ELF kernel is entered
/// through its PVH note (an error if it has none); otherwise through the
/// Linux 64-bit boot protocol.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    file: &mut impl KernelImage,
    want_pvh: bool,
) -> Result<LoadedKernel> {
    let format = probe_kernel(file)?;
    let highmem = Some(GuestAddress(HIMEM_START));
    match format {
        KernelFormat::Elf => {
            let res = Elf::load(mem, None, file, highmem).map_err(|source| Error::Load {
                format: "ELF",
                source,
            })?;
            check_in_ram(mem, res.kernel_end)?;
            let (entry, mode) = if want_pvh {
                match res.pvh_boot_cap {
                    PvhBootCapability::PvhEntryPresent(addr) => (addr, EntryMode::Pvh),
                    _ => return Err(Error::NoPvhEntry),
                }
            } else {
                (res.kernel_load, EntryMode::Linux64)
            };
            Ok(LoadedKernel {
                format,
                entry,
                mode,
                end: res.kernel_end,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            if want_pvh {
                return Err(Error::NoPvhEntry);
            }
            let res = BzImage::load(mem, None, file, highmem).map_err(|source| Error::Load {
                format: "bzImage",
                source,
            })?;
            check_in_ram(mem, res.kernel_end)?;
            Ok(LoadedKernel {
                format,
                entry: res.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
                mode: EntryMode::Linux64,
                end: res.kernel_end,
                setup_header: res.setup_header,
            })
        }
    }
}

/// Checks that guest RAM holds the whole kernel, from `HIMEM_START` (below
/// which linux-loader places nothing) to `end`: an ELF segment's size in
/// memory can be larger than what the file holds, and a bzImage's end
/// comes from its header's fields; nothing else bounds them.
fn check_in_ram(mem: &GuestMemoryMmap, end: u64) -> Result<()> {
    let len = end.saturating_sub(HIMEM_START);
    let fits =
        usize::try_from(len).is_ok_and(|len| mem.check_range(GuestAddress(HIMEM_START), len));
    if fits {
        Ok(())
    } else {
        Err(Error::PastRam { end })
    }
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible
/// in low RAM, never below `kernel_end`.
pub fn initrd_address(mem_size: u64, kernel_end: u64, size: u64) -> Result<u64> {
    let top = low_ram_end(mem_size);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| *a >= kernel_end.max(HIMEM_START))
        .ok_or(Error::InitrdTooLarge { size })?;
    Ok(addr)
}

/// Loads the initrd in `file` at the top of low RAM. Returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    file: &mut File,
) -> Result<(u64, u64)> {
    let size = file.seek(SeekFrom::End(0)).map_err(Error::ReadInitrd)?;
    file.seek(SeekFrom::Start(0)).map_err(Error::ReadInitrd)?;
    let addr = initrd_address(mem_size, kernel_end, size)?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, size as usize)
        .map_err(|e| Error::ReadInitrd(std::io::Error::other(e.to_string())))?;
    Ok((addr, size))
}

/// Builds a command line, checking the boot protocol's length limit.
pub fn make_cmdline(text: &str) -> Result<Cmdline> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| Error::Cmdline(e.to_string()))?;
    cmdline
        .insert_str(text)
        .map_err(|e| Error::Cmdline(format!("{e} (at most {} bytes)", CMDLINE_MAX_SIZE - 1)))?;
    Ok(cmdline)
}

/// Writes `cmdline` at `CMDLINE_START`. Returns its length with the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize> {
    loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|_| Error::WriteBootData("the command line"))?;
    let len = cmdline
        .as_cstring()
        .map_err(|e| Error::Cmdline(e.to_string()))?
        .as_bytes_with_nul()
        .len();
    Ok(len)
}

/// `setup_data` type of a random seed the kernel credits to its entropy
/// pool (with random.trust_bootloader, on by default), so its random number
/// generator is ready at once instead of after seconds of gathering.
pub const SETUP_RNG_SEED: u32 = 9;
/// Bytes of seed handed to the guest.
pub const RNG_SEED_LEN: usize = 32;

/// Writes a `setup_data` node carrying `seed` at `SETUP_DATA_START`,
/// chained before `next` (0 ends the chain). Returns its address, for
/// `boot_params.hdr.setup_data`.
pub fn write_rng_seed(mem: &GuestMemoryMmap, seed: &[u8; RNG_SEED_LEN], next: u64) -> Result<u64> {
    let mut node = Vec::with_capacity(16 + RNG_SEED_LEN);
    node.extend_from_slice(&next.to_le_bytes());
    node.extend_from_slice(&SETUP_RNG_SEED.to_le_bytes());
    node.extend_from_slice(&(RNG_SEED_LEN as u32).to_le_bytes());
    node.extend_from_slice(seed);
    mem.write_slice(&node, GuestAddress(SETUP_DATA_START))
        .map_err(|_| Error::WriteBootData("the RNG seed"))?;
    Ok(SETUP_DATA_START)
}

/// The zero page for the Linux boot protocol. `setup_data` is the head of
/// the setup_data chain, if any.
pub fn boot_params_for(
    header: Option<setup_header>,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    setup_data: Option<u64>,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    if let Some(addr) = setup_data {
        params.hdr.setup_data = addr;
    }
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = e820_map(mem_size);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    params
}

/// Writes the zero page at `ZERO_PAGE_START`.
pub fn write_boot_params(mem: &GuestMemoryMmap, params: &boot_params) -> Result<()> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| Error::WriteBootData("the zero page"))
}

/// Writes the PVH start info, its memory map and the initrd module entry at
/// `PVH_INFO_START`.
pub fn write_pvh_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    initrd: Option<(u64, u64)>,
) -> Result<()> {
    let info_size = std::mem::size_of::<hvm_start_info>() as u64;
    let modlist_addr = PVH_INFO_START + info_size;
    let memmap_addr = modlist_addr + std::mem::size_of::<hvm_modlist_entry>() as u64;
    let map = e820_map(mem_size);
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if initrd.is_some() { modlist_addr } else { 0 },
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: memmap_addr,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    let w = |what| Error::WriteBootData(what);
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(|_| w("the PVH start info"))?;
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(modlist_addr))
            .map_err(|_| w("the PVH module list"))?;
    }
    for (i, e) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        let at = memmap_addr + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        if at + 24 > ZERO_PAGE_START {
            return Err(w("the PVH memory map"));
        }
        mem.write_obj(entry, GuestAddress(at))
            .map_err(|_| w("the PVH memory map"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MIB: u64 = 1 << 20;

    #[test]
    fn detects_elf_and_bzimage() {
        assert_eq!(
            detect_format(b"\x7fELF\x02\x01").unwrap(),
            KernelFormat::Elf
        );
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz).unwrap(), KernelFormat::BzImage);
        assert!(matches!(
            detect_format(b"#!/bin/sh\n"),
            Err(Error::UnknownFormat)
        ));
        assert!(matches!(detect_format(&[]), Err(Error::UnknownFormat)));
    }

    fn temp_file(bytes: &[u8]) -> File {
        let mut f = tempfile();
        f.write_all(bytes).unwrap();
        f
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "arch-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn rejects_32bit_elf_and_old_bzimage() {
        let mut elf32 = vec![0u8; 64];
        elf32[..4].copy_from_slice(ELF_MAGIC);
        elf32[4] = 1;
        elf32[18] = 3;
        assert!(matches!(
            probe_kernel(&mut temp_file(&elf32)),
            Err(Error::WrongElfArch {
                class: 1,
                machine: 3
            })
        ));
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206] = 0x04;
        bz[0x207] = 0x02;
        assert!(matches!(
            probe_kernel(&mut temp_file(&bz)),
            Err(Error::OldBootProtocol(0x204))
        ));
    }

    /// Found by the kernel_image fuzz target
    /// (fuzz/regressions/kernel_image/bzimage-truncated-in-header): it
    /// panicked reading the boot protocol version.
    #[test]
    fn a_bzimage_cut_inside_its_header_is_an_error() {
        for len in [0x206, 0x207] {
            let mut bz = vec![0u8; len];
            bz[0x202..0x206].copy_from_slice(b"HdrS");
            let err = probe_kernel(&mut std::io::Cursor::new(&bz)).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { format: "bzImage", len: l } if l == len),
                "{err}"
            );
        }
        // Its ELF twin: the magic, then the end before e_machine.
        let err = probe_kernel(&mut std::io::Cursor::new(b"\x7fELF\x02\x01")).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    format: "ELF",
                    len: 6
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn garbage_kernel_is_rejected_before_loading() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let mut f = temp_file(&[0x5a; 4096]);
        assert!(matches!(
            load_kernel(&mem, &mut f, false),
            Err(Error::UnknownFormat)
        ));
        let mut empty = temp_file(&[]);
        assert!(matches!(
            load_kernel(&mem, &mut empty, false),
            Err(Error::UnknownFormat)
        ));
    }

    #[test]
    fn truncated_bzimage_is_an_error_not_a_panic() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let mut bz = vec![0u8; 0x400];
        bz[0x1f1] = 30; // setup_sects: larger than the file
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206] = 0x0f;
        bz[0x207] = 0x02;
        bz[0x211] = 1; // loadflags: LOADED_HIGH
        bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let err = load_kernel(&mem, &mut temp_file(&bz), false).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Load {
                    format: "bzImage",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Found by the kernel_image fuzz target
    /// (fuzz/regressions/kernel_image/elf-memsz-past-ram): one byte in the
    /// file, 592 MiB in memory.
    #[test]
    fn an_elf_segment_larger_than_ram_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap();
        let mut elf = vec![0u8; 0x1000];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2; // ELFCLASS64
        elf[5] = 1; // little-endian
        elf[6] = 1;
        elf[16] = 2; // ET_EXEC
        elf[18] = 62; // EM_X86_64
        elf[20] = 1;
        elf[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes()); // e_entry
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[52] = 64; // e_ehsize
        elf[54] = 56; // e_phentsize
        elf[56] = 1; // e_phnum
        let ph = 64;
        elf[ph] = 1; // PT_LOAD
        elf[ph + 4] = 5;
        elf[ph + 8..ph + 16].copy_from_slice(&0x800u64.to_le_bytes()); // p_offset
        elf[ph + 16..ph + 24].copy_from_slice(&0x20_0000u64.to_le_bytes()); // p_vaddr
        elf[ph + 24..ph + 32].copy_from_slice(&0x20_0000u64.to_le_bytes()); // p_paddr
        elf[ph + 32..ph + 40].copy_from_slice(&1u64.to_le_bytes()); // p_filesz
        let memsz = 592u64 << 20;
        elf[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes()); // p_memsz
        let err = load_kernel(&mem, &mut std::io::Cursor::new(&elf), false).unwrap_err();
        assert!(
            matches!(err, Error::PastRam { end } if end == 0x20_0000 + memsz),
            "{err}"
        );
        // The same segment with a size in memory that fits loads.
        elf[ph + 40..ph + 48].copy_from_slice(&(1u64 << 20).to_le_bytes());
        let loaded = load_kernel(&mem, &mut std::io::Cursor::new(&elf), false).unwrap();
        assert_eq!(loaded.end, 0x30_0000);
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram_page_aligned() {
        let addr = initrd_address(128 * MIB, 20 * MIB, 1_000_000).unwrap();
        assert_eq!(addr % PAGE_SIZE, 0);
        assert!(addr + 1_000_000 <= 128 * MIB);
        assert!(128 * MIB - (addr + 1_000_000) < PAGE_SIZE);
        // Large guests keep it below the MMIO gap.
        let addr = initrd_address(8 << 30, 20 * MIB, 4096).unwrap();
        assert_eq!(addr, MMIO_GAP_START - 4096);
    }

    #[test]
    fn initrd_that_would_overlap_the_kernel_is_rejected() {
        assert!(matches!(
            initrd_address(32 * MIB, 30 * MIB, 4 * MIB),
            Err(Error::InitrdTooLarge { .. })
        ));
        assert!(matches!(
            initrd_address(32 * MIB, 0, 64 * MIB),
            Err(Error::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn initrd_is_copied_into_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (addr, size) = load_initrd(&mem, 32 << 20, 2 << 20, &mut temp_file(&data)).unwrap();
        assert_eq!(size, 10_000);
        let mut back = vec![0u8; 10_000];
        mem.read_slice(&mut back, GuestAddress(addr)).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn cmdline_limit_and_contents() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let c = make_cmdline("console=ttyS0 reboot=k").unwrap();
        let len = write_cmdline(&mem, &c).unwrap();
        assert_eq!(len, "console=ttyS0 reboot=k".len() + 1);
        let mut back = vec![0u8; len];
        mem.read_slice(&mut back, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&back, b"console=ttyS0 reboot=k\0");
        assert!(make_cmdline(&"x".repeat(CMDLINE_MAX_SIZE - 1)).is_ok());
        assert!(matches!(
            make_cmdline(&"x".repeat(CMDLINE_MAX_SIZE)),
            Err(Error::Cmdline(_))
        ));
    }

    #[test]
    fn zero_page_fields() {
        let p = boot_params_for(
            None,
            256 * MIB,
            42,
            Some((0x0800_0000, 0x1000)),
            Some(SETUP_DATA_START),
        );
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ hdr.type_of_loader }, KERNEL_LOADER_OTHER);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.cmdline_size }, 42);
        assert_eq!(
            ({ hdr.ramdisk_image }, { hdr.ramdisk_size }),
            (0x0800_0000, 0x1000)
        );
        assert_eq!({ hdr.setup_data }, SETUP_DATA_START);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (HIMEM_START, 255 * MIB, 1)
        );
    }

    #[test]
    fn zero_page_keeps_the_bzimage_header() {
        let hdr = setup_header {
            version: 0x020f,
            setup_sects: 30,
            header: KERNEL_HDR_MAGIC,
            ..Default::default()
        };
        let p = boot_params_for(Some(hdr), 64 * MIB, 10, None, None);
        assert_eq!(({ p.hdr.version }, { p.hdr.setup_sects }), (0x020f, 30));
        assert_eq!({ p.hdr.type_of_loader }, KERNEL_LOADER_OTHER);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn rng_seed_node() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let seed = [0xa5u8; RNG_SEED_LEN];
        assert_eq!(
            write_rng_seed(&mem, &seed, 0x1234).unwrap(),
            SETUP_DATA_START
        );
        let mut node = [0u8; 16 + RNG_SEED_LEN];
        mem.read_slice(&mut node, GuestAddress(SETUP_DATA_START))
            .unwrap();
        assert_eq!(u64::from_le_bytes(node[..8].try_into().unwrap()), 0x1234);
        assert_eq!(
            u32::from_le_bytes(node[8..12].try_into().unwrap()),
            SETUP_RNG_SEED
        );
        assert_eq!(
            u32::from_le_bytes(node[12..16].try_into().unwrap()),
            RNG_SEED_LEN as u32
        );
        assert_eq!(&node[16..], &seed);
        // It must not overlap the zero page.
        assert!(SETUP_DATA_START + node.len() as u64 <= ZERO_PAGE_START);
    }

    #[test]
    fn pvh_start_info() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        write_pvh_info(&mem, 64 * MIB, Some((0x300_0000, 0x2000))).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.memmap_entries, 3);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x300_0000, 0x2000));
        let e: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(info.memmap_paddr + 2 * 24))
            .unwrap();
        assert_eq!((e.addr, e.size, e.type_), (HIMEM_START, 63 * MIB, 1));
    }
}
