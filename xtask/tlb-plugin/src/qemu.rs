//! The QEMU side: the few declarations of QEMU's TCG plugin API (version 1,
//! as QEMU 7.2 implements it; documented in QEMU's
//! `docs/devel/tcg-plugins.rst`) that this plugin uses, written out here
//! because QEMU 7.2 installs no `qemu-plugin.h`, and the callbacks, which
//! only decode what QEMU hands them and pass it to [`Plugin`].
//!
//! The `qemu_plugin_*` functions are resolved from the QEMU binary when it
//! loads this library. All `unsafe` of the crate is here.

use crate::decode::{classify, Special};
use crate::plugin::{Event, Options, Plugin, TbInfo};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::Mutex;

type PluginId = u64;
type MemInfo = u32;

#[repr(C)]
struct Tb {
    _opaque: [u8; 0],
}
#[repr(C)]
struct Insn {
    _opaque: [u8; 0],
}
#[repr(C)]
struct HwAddr {
    _opaque: [u8; 0],
}

/// `enum qemu_plugin_cb_flags`: the callbacks read no registers.
const CB_NO_REGS: c_int = 0;
/// `enum qemu_plugin_mem_rw`: loads and stores.
const MEM_RW: c_int = 3;

type TbTransCb = extern "C" fn(PluginId, *mut Tb);
type VcpuUdataCb = extern "C" fn(c_uint, *mut c_void);
type MemCb = extern "C" fn(c_uint, MemInfo, u64, *mut c_void);
type UdataCb = extern "C" fn(PluginId, *mut c_void);

extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    fn qemu_plugin_register_vcpu_tb_exec_cb(tb: *mut Tb, cb: VcpuUdataCb, flags: c_int, userdata: *mut c_void);
    fn qemu_plugin_register_vcpu_insn_exec_cb(insn: *mut Insn, cb: VcpuUdataCb, flags: c_int, userdata: *mut c_void);
    fn qemu_plugin_register_vcpu_mem_cb(insn: *mut Insn, cb: MemCb, flags: c_int, rw: c_int, userdata: *mut c_void);
    fn qemu_plugin_register_atexit_cb(id: PluginId, cb: UdataCb, userdata: *mut c_void);
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_get_insn(tb: *const Tb, index: usize) -> *mut Insn;
    fn qemu_plugin_insn_data(insn: *const Insn) -> *const c_void;
    fn qemu_plugin_insn_size(insn: *const Insn) -> usize;
    fn qemu_plugin_insn_vaddr(insn: *const Insn) -> u64;
    fn qemu_plugin_insn_haddr(insn: *const Insn) -> *mut c_void;
    fn qemu_plugin_get_hwaddr(info: MemInfo, vaddr: u64) -> *mut HwAddr;
    fn qemu_plugin_hwaddr_phys_addr(haddr: *const HwAddr) -> u64;
}

/// The plugin API version this library was written against.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static qemu_plugin_version: c_int = 1;

/// The state every callback works on (QEMU may call from several vCPU
/// threads; without `-icount` with MTTCG they can be concurrent).
static STATE: Mutex<Option<Plugin>> = Mutex::new(None);

/// Translation-block descriptions, shared by identical retranslations
/// (key: first instruction's virtual and host address, instruction count),
/// so memory stays bounded by the distinct blocks of the run.
static TBS: Mutex<Option<TbCache>> = Mutex::new(None);

/// (first instruction's virtual address, its host address, instruction count).
type TbCache = HashMap<(u64, usize, usize), &'static TbInfo>;

/// Code frames are keyed by host address (the API gives no physical
/// address for code); a high bit keeps them apart from data frames.
const CODE_FRAME: u64 = 1 << 63;

fn with_plugin(f: impl FnOnce(&mut Plugin)) {
    if let Ok(mut guard) = STATE.lock() {
        if let Some(plugin) = guard.as_mut() {
            f(plugin);
        }
    }
}

/// Called by QEMU once when it loads the plugin.
///
/// # Safety
/// QEMU passes `argc` valid NUL-terminated strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let mut args = Vec::new();
    for i in 0..argc.max(0) as usize {
        // SAFETY: QEMU hands `argc` valid C strings that live as long as the plugin.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
        args.push(arg.to_string_lossy().into_owned());
    }
    let options = match Options::parse(args.iter().map(String::as_str)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return 1;
        }
    };
    if let Ok(mut state) = STATE.lock() {
        *state = Some(Plugin::new(options));
    }
    // SAFETY: registering callbacks with the id QEMU gave us.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
        qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
    }
    0
}

/// A block is translated: note its pages and instructions, and hook the
/// block, its memory accesses and the instructions the model acts on.
extern "C" fn on_translate(_id: PluginId, tb: *mut Tb) {
    // SAFETY: `tb` is valid for the duration of this callback; so are the
    // instruction handles and their bytes (`size` bytes at `data`).
    unsafe {
        let n = qemu_plugin_tb_n_insns(tb);
        if n == 0 {
            return;
        }
        let mut pages: Vec<(u64, u64)> = Vec::new();
        let first = qemu_plugin_tb_get_insn(tb, 0);
        let key = (qemu_plugin_insn_vaddr(first), qemu_plugin_insn_haddr(first) as usize, n);
        for index in 0..n {
            let insn = qemu_plugin_tb_get_insn(tb, index);
            let vpn = qemu_plugin_insn_vaddr(insn) >> 12;
            let frame = CODE_FRAME | (qemu_plugin_insn_haddr(insn) as u64 >> 12);
            if pages.last() != Some(&(vpn, frame)) {
                pages.push((vpn, frame));
            }
            let bytes =
                std::slice::from_raw_parts(qemu_plugin_insn_data(insn) as *const u8, qemu_plugin_insn_size(insn));
            let event = match classify(bytes) {
                Some(Special::Cr3Write) => Some(Event::Cr3Write),
                Some(Special::Cr4Write) => Some(Event::Cr4Write),
                Some(Special::Invlpg) => Some(Event::Invlpg),
                Some(Special::Marker(op, tag)) => Some(Event::Marker { op, tag, after: (n - 1 - index) as u32 }),
                None => None,
            };
            if let Some(event) = event {
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_event, CB_NO_REGS, event.encode() as *mut c_void);
            }
            qemu_plugin_register_vcpu_mem_cb(insn, on_memory, CB_NO_REGS, MEM_RW, std::ptr::null_mut());
        }
        let info: &'static TbInfo = match TBS.lock() {
            Ok(mut cache) => {
                let cache = cache.get_or_insert_with(HashMap::new);
                let info = TbInfo { insns: n as u64, pages };
                match cache.get(&key) {
                    Some(known) if **known == info => known,
                    _ => {
                        let leaked: &'static TbInfo = Box::leak(Box::new(info));
                        cache.insert(key, leaked);
                        leaked
                    }
                }
            }
            Err(_) => return,
        };
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, CB_NO_REGS, info as *const TbInfo as *mut c_void);
    }
}

extern "C" fn on_block(vcpu: c_uint, userdata: *mut c_void) {
    // SAFETY: `userdata` is a leaked, never freed `TbInfo` (on_translate).
    let info = unsafe { &*(userdata as *const TbInfo) };
    with_plugin(|p| p.tb_exec(vcpu as usize, info));
}

extern "C" fn on_event(vcpu: c_uint, userdata: *mut c_void) {
    if let Some(event) = Event::decode(userdata as u64) {
        with_plugin(|p| p.event(vcpu as usize, event));
    }
}

extern "C" fn on_memory(vcpu: c_uint, info: MemInfo, vaddr: u64, _userdata: *mut c_void) {
    // SAFETY: called inside a memory callback, where QEMU answers for
    // `info`; the handle it returns is read at once (or is null).
    let frame = unsafe {
        let hw = qemu_plugin_get_hwaddr(info, vaddr);
        if hw.is_null() {
            0
        } else {
            qemu_plugin_hwaddr_phys_addr(hw) >> 12
        }
    };
    with_plugin(|p| p.data(vcpu as usize, vaddr, frame));
}

extern "C" fn on_exit(_id: PluginId, _userdata: *mut c_void) {
    with_plugin(|p| {
        let report = p.report();
        match &p.options.out {
            Some(path) => {
                if let Err(error) = std::fs::write(path, &report) {
                    eprintln!("exotlb: cannot write {path}: {error}");
                }
            }
            None => eprint!("{report}"),
        }
    });
}
