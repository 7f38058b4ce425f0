//! The network card: QEMU's virtio-net (PCI) driven by the `virtio-drivers`
//! crate, behind a small safe interface (probe, MAC, drain received frames,
//! transmit one frame from a physical frame).
//!
//! * PCI configuration space is reached through the legacy ports
//!   0xCF8/0xCFC ([`PortCam`]), which every PC chipset QEMU emulates has
//!   (the default i440fx has no ECAM), so no machine type is forced.
//! * The crate's [`Hal`] is implemented by [`KernelHal`]: DMA memory is
//!   physically contiguous frames from the frame allocator, reached through
//!   the bootloader's physical-memory window; device registers (BARs) are
//!   mapped uncached into a kernel window of their own.
//! * Interrupts (if the kernel asks, [`Nic::enable_irq`]): the device's
//!   PCI INTx line, whose number the firmware wrote into the interrupt-line
//!   register, is routed through the I/O APIC to a vector, level
//!   triggered. The handler masks the line ([`irq_raised`]); the next
//!   [`Nic::drain`] acknowledges the device (reading its ISR status
//!   deasserts the line), takes what arrived and unmasks it, so a packet
//!   arriving meanwhile raises the line again and is never missed.
//!   Otherwise the kernel polls the receive queue (timer, network system
//!   calls, idle loop) and the line stays masked.

use super::memory;
use super::paging::{phys_to_virt, zero_owned, AddressSpace, Flags};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};
use x86_64::instructions::port::Port;

/// Descriptors per virtqueue (receive buffers the device can fill ahead).
const QUEUE_SIZE: usize = 32;
/// Bytes per receive buffer: the virtio-net header and a full frame fit.
const RX_BUF_LEN: usize = 2048;
/// Receive buffers per DMA page.
const RX_PER_PAGE: usize = 4096 / RX_BUF_LEN;
/// Largest frame the transmit buffer holds (without the virtio header).
pub const MAX_TX_FRAME: usize = 1514;
/// Spins waiting for the device to take a transmitted frame before the
/// kernel gives up on the device (QEMU completes it within a few).
const TX_SPIN_LIMIT: u64 = 50_000_000;

/// The I/O APIC input of the NIC's interrupt line while interrupts are on
/// (`NO_IRQ`: polled).
static IRQ_LINE: AtomicU64 = AtomicU64::new(NO_IRQ);
const NO_IRQ: u64 = u64::MAX;
/// PCI configuration register holding the interrupt line (low byte).
const PCI_INTERRUPT_LINE: u8 = 0x3c;

/// The NIC's interrupt arrived: mask its line until the next
/// [`Nic::drain`] has served the device.
pub fn irq_raised() {
    let line = IRQ_LINE.load(Ordering::Relaxed);
    if line != NO_IRQ {
        super::apic::ioapic_mask(line as u8, true);
    }
}

/// Where the physical-memory window is usable for DMA: `[0, RAM_END)`.
static RAM_END: AtomicU64 = AtomicU64::new(0);
/// The kernel window device registers are mapped into, and its next free page.
static MMIO_NEXT: AtomicU64 = AtomicU64::new(0);
static MMIO_END: AtomicU64 = AtomicU64::new(0);

/// PCI configuration mechanism #1: address to 0xCF8, data at 0xCFC.
pub struct PortCam;

impl PortCam {
    fn address(function: DeviceFunction, register_offset: u8) -> u32 {
        0x8000_0000
            | (function.bus as u32) << 16
            | (function.device as u32 & 0x1f) << 11
            | (function.function as u32 & 0x7) << 8
            | (register_offset as u32 & 0xfc)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, function: DeviceFunction, register_offset: u8) -> u32 {
        // SAFETY: ports 0xCF8/0xCFC are the PC's PCI configuration
        // mechanism; the kernel is single-threaded with interrupts off, so
        // the address/data pair cannot be interleaved with another access.
        unsafe {
            Port::<u32>::new(0xcf8).write(Self::address(function, register_offset));
            Port::<u32>::new(0xcfc).read()
        }
    }

    fn write_word(&mut self, function: DeviceFunction, register_offset: u8, data: u32) {
        // SAFETY: as for `read_word`; only the NIC probe writes configuration
        // space (its command register and, while sizing, its BARs).
        unsafe {
            Port::<u32>::new(0xcf8).write(Self::address(function, register_offset));
            Port::<u32>::new(0xcfc).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// Allocate `pages` zeroed, physically contiguous frames.
fn alloc_dma(pages: usize) -> Option<u64> {
    let pa = memory::alloc_contiguous(pages as u64)?;
    for page in 0..pages as u64 {
        zero_owned(pa + page * 4096);
    }
    Some(pa)
}

fn free_dma(pa: u64, pages: usize) {
    for page in 0..pages as u64 {
        memory::free_frame(pa + page * 4096);
    }
}

/// The physical address of a kernel buffer that lies in the
/// physical-memory window over RAM (the heap, DMA pages), if it does.
fn window_pa(va: u64, len: usize) -> Option<u64> {
    let pa = va.checked_sub(phys_to_virt(0))?;
    (pa.checked_add(len as u64)? <= RAM_END.load(Ordering::Relaxed)).then_some(pa)
}

/// virtio-drivers' view of the platform.
pub struct KernelHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, contiguous frames the
// allocator gives to nobody else until `dma_dealloc`; `mmio_phys_to_virt`
// returns a fresh uncached mapping of the BAR range; `share` gives the
// device the physical address of the very bytes (window) or of a private
// bounce copy, which `unshare` copies back and frees.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match alloc_dma(pages) {
            Some(pa) => (pa, NonNull::new(phys_to_virt(pa) as *mut u8).expect("window address is not null")),
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        free_dma(paddr, pages);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        let va = map_mmio(paddr, size as u64).expect("room in the device window for a BAR");
        NonNull::new(va as *mut u8).expect("window address is not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len();
        if let Some(pa) = window_pa(va, len) {
            return pa;
        }
        // Not in the window (a header on the kernel stack): bounce it
        // through frames of our own.
        let pages = len.div_ceil(4096).max(1);
        let pa = alloc_dma(pages).expect("a frame for a DMA bounce buffer");
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller guarantees `buffer` is valid for `len`
            // bytes; the bounce frames are ours and `len` bytes long at least.
            unsafe { core::ptr::copy_nonoverlapping(va as *const u8, phys_to_virt(pa) as *mut u8, len) };
        }
        pa
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let va = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len();
        if window_pa(va, len) == Some(paddr) {
            return;
        }
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce copy `share` made of this buffer,
            // which the caller guarantees is valid and unaliased.
            unsafe { core::ptr::copy_nonoverlapping(phys_to_virt(paddr) as *const u8, va as *mut u8, len) };
        }
        free_dma(paddr, len.div_ceil(4096).max(1));
    }
}

/// Map `[pa, pa + size)` uncached into the device window; returns the
/// virtual address of `pa`.
fn map_mmio(pa: u64, size: u64) -> Option<u64> {
    let first = pa & !0xfff;
    let pages = (pa + size.max(1)).next_multiple_of(4096).checked_sub(first)? / 4096;
    let base = MMIO_NEXT.fetch_add(pages * 4096, Ordering::Relaxed);
    if base == 0 || base + pages * 4096 > MMIO_END.load(Ordering::Relaxed) {
        return None;
    }
    let mut kernel = AddressSpace::current();
    for page in 0..pages {
        kernel
            .map_kernel(
                base + page * 4096,
                first + page * 4096,
                Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH | Flags::NO_EXECUTE,
            )
            .ok()?;
    }
    Some(base + (pa - first))
}

/// The virtio-net device, its receive buffers and its transmit buffer.
pub struct Nic {
    device: VirtIONetRaw<KernelHal, PciTransport, QUEUE_SIZE>,
    /// Physical address of the receive buffers (QUEUE_SIZE * RX_BUF_LEN bytes).
    rx_pa: u64,
    /// Which receive buffer each outstanding token stands for.
    rx_of_token: [usize; QUEUE_SIZE],
    /// Physical address of the transmit page (virtio header, then the frame).
    tx_pa: u64,
    mac: [u8; 6],
    /// The device stopped completing transmissions: it is no longer used.
    broken: bool,
    /// The interrupt line the firmware assigned (PCI configuration), if
    /// it names an I/O APIC input at all.
    irq_line: Option<u8>,
    /// Interrupts are on ([`Nic::enable_irq`]).
    irq_mode: bool,
}

impl Nic {
    /// Look for a virtio-net device on PCI bus 0 and bring it up. `window`
    /// is a free top-level kernel slot (512 GiB) to map its registers into;
    /// it must be chosen before environments copy the kernel half.
    pub fn probe(window: u64, ram_end: u64) -> Option<Nic> {
        RAM_END.store(ram_end, Ordering::Relaxed);
        MMIO_NEXT.store(window, Ordering::Relaxed);
        MMIO_END.store(window + (1 << 39), Ordering::Relaxed);
        let mut root = PciRoot::new(PortCam);
        let (function, _) =
            root.enumerate_bus(0).find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network))?;
        let irq_line = match PortCam.read_word(function, PCI_INTERRUPT_LINE) as u8 {
            line @ 1..=23 => Some(line),
            _ => None,
        };
        let (_, command) = root.get_status_command(function);
        root.set_command(function, command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER);
        let transport = match PciTransport::new::<KernelHal, _>(&mut root, function) {
            Ok(transport) => transport,
            Err(error) => {
                log::warn!("virtio-net at {}: {}", function, error);
                return None;
            }
        };
        let mut device = match VirtIONetRaw::<KernelHal, PciTransport, QUEUE_SIZE>::new(transport) {
            Ok(device) => device,
            Err(error) => {
                log::warn!("virtio-net at {}: {}", function, error);
                return None;
            }
        };
        device.disable_interrupts();
        let rx_pages = QUEUE_SIZE / RX_PER_PAGE;
        let rx_pa = alloc_dma(rx_pages)?;
        let tx_pa = alloc_dma(1)?;
        let mac = device.mac_address();
        let mut nic =
            Nic { device, rx_pa, rx_of_token: [0; QUEUE_SIZE], tx_pa, mac, broken: false, irq_line, irq_mode: false };
        for buffer in 0..QUEUE_SIZE {
            if !nic.post_rx(buffer) {
                return None;
            }
        }
        log::info!(
            "net: virtio-net at {}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            function,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5]
        );
        Some(nic)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Have the device interrupt on `vector` (through the I/O APIC). False,
    /// and it stays polled, if the firmware gave it no usable line.
    pub fn enable_irq(&mut self, vector: u8) -> bool {
        let Some(line) = self.irq_line else { return false };
        if !super::apic::ioapic_route(line, vector, true) {
            return false;
        }
        self.device.enable_interrupts();
        self.irq_mode = true;
        IRQ_LINE.store(line as u64, Ordering::Relaxed);
        log::info!("net: virtio-net interrupts on line {} (vector {:#x})", line, vector);
        self.drain(|_| {});
        true
    }

    pub fn irq_mode(&self) -> bool {
        self.irq_mode
    }

    fn rx_buffer(&mut self, buffer: usize) -> &'static mut [u8] {
        let pa = self.rx_pa + (buffer * RX_BUF_LEN) as u64;
        // SAFETY: receive buffer `buffer` lies in the DMA pages this NIC
        // owns; the device does not write it between `receive_complete`
        // and the next `receive_begin`, the only times it is lent out here,
        // and the caller drops the slice before lending it again.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(pa) as *mut u8, RX_BUF_LEN) }
    }

    /// Give receive buffer `buffer` to the device.
    fn post_rx(&mut self, buffer: usize) -> bool {
        let slice = self.rx_buffer(buffer);
        // SAFETY: the buffer is DMA memory nothing reads or writes until
        // the device hands it back through `poll_receive`.
        match unsafe { self.device.receive_begin(slice) } {
            Ok(token) if (token as usize) < QUEUE_SIZE => {
                self.rx_of_token[token as usize] = buffer;
                true
            }
            _ => false,
        }
    }

    /// Hand every frame the device has received to `each`, then give its
    /// buffer back. Returns how many there were.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> u64 {
        if self.irq_mode {
            // Deassert the line first: what arrives from now on raises it again.
            self.device.ack_interrupt();
        }
        let mut count = 0;
        while let Some(token) = self.device.poll_receive() {
            let Some(&buffer) = self.rx_of_token.get(token as usize) else { break };
            let slice = self.rx_buffer(buffer);
            // SAFETY: `slice` is the buffer passed to `receive_begin` for this token.
            match unsafe { self.device.receive_complete(token, slice) } {
                Ok((header, len)) => each(&slice[header..header + len.min(RX_BUF_LEN - header)]),
                Err(error) => log::warn!("virtio-net receive: {}", error),
            }
            count += 1;
            if !self.post_rx(buffer) {
                log::warn!("virtio-net: could not repost a receive buffer");
            }
        }
        if let Some(line) = self.irq_line.filter(|_| self.irq_mode) {
            super::apic::ioapic_mask(line, false);
        }
        count
    }

    /// Transmit `len` bytes at `offset` in the physical frame `frame_pa`
    /// (the caller checked the frame key, and that the bytes lie inside
    /// the frame): copied into the transmit DMA buffer, sent, waited for.
    pub fn transmit_from_frame(&mut self, frame_pa: u64, offset: u64, len: usize) -> bool {
        if self.broken || len > MAX_TX_FRAME || offset + len as u64 > 4096 {
            return false;
        }
        if let Some(line) = self.irq_line.filter(|_| self.irq_mode) {
            // The completion raises the line too: masked until the next
            // `drain` acknowledges it, so it costs no interrupt.
            super::apic::ioapic_mask(line, true);
        }
        // SAFETY: the transmit page is DMA memory this NIC owns and the
        // device has handed back (every transmission is waited for).
        let page = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.tx_pa) as *mut u8, 4096) };
        let Ok(header) = self.device.fill_buffer_header(page) else { return false };
        super::paging::read_env_frame(frame_pa, offset as usize, &mut page[header..header + len]);
        let packet = &page[..header + len];
        // SAFETY: the page is not touched again until the device has
        // completed the transmission (waited for below).
        let Ok(token) = (unsafe { self.device.transmit_begin(packet) }) else { return false };
        let mut spins = 0u64;
        while self.device.poll_transmit() != Some(token) {
            spins += 1;
            if spins > TX_SPIN_LIMIT {
                log::warn!("virtio-net: transmission never completed; the NIC is out of service");
                self.broken = true;
                return false;
            }
            core::hint::spin_loop();
        }
        // SAFETY: the same buffer as given to `transmit_begin`.
        unsafe { self.device.transmit_complete(token, packet) }.is_ok()
    }
}
