/*
 * The exec target of bench.c's `linux_fork_exec_wait`: the smallest static
 * program there is (no libc, no startup code), so the figure is the
 * kernel's fork + execve + exit + wait and not a C library's start-up.
 *
 * Built by `cargo xtask bench` with `gcc -O2 -static -nostdlib` and packed
 * into the initramfs as /hello.
 */
void _start(void)
{
    __asm__ volatile("mov $60, %eax\n\t" /* SYS_exit */
                     "xor %edi, %edi\n\t"
                     "syscall");
    __builtin_unreachable();
}
