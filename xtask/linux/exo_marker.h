/* Measurement markers for C programs (the Linux guest's, for example):
 * the same 8-byte no-op as shared_abi::marker, `nopl disp32(%rax,%rax,1)`
 * with the displacement [tag low, tag high, op, 0xe5]. It runs in any
 * ring as a no-op; under QEMU with the TLB-model plugin (xtask/tlb-plugin)
 * the instructions and modelled TLB misses executed between
 * exo_marker_begin(TAG) and exo_marker_end(TAG) are reported per tag.
 * TAG must be a compile-time constant (0..65535): the plugin reads it from
 * the instruction's bytes. */
#ifndef EXO_MARKER_H
#define EXO_MARKER_H

#define EXO_MARKER_MAGIC 0xe5
#define EXO_MARKER_BEGIN 1
#define EXO_MARKER_END 2

#define EXO_MARKER(op, tag)                                                   \
    __asm__ volatile(".byte 0x0f, 0x1f, 0x84, 0x00\n\t.long %c0"              \
                     :                                                        \
                     : "i"(((unsigned)EXO_MARKER_MAGIC << 24) | ((op) << 16) | \
                           ((tag) & 0xffff))                                  \
                     : "memory")

#define exo_marker_begin(tag) EXO_MARKER(EXO_MARKER_BEGIN, (tag))
#define exo_marker_end(tag) EXO_MARKER(EXO_MARKER_END, (tag))

#endif
