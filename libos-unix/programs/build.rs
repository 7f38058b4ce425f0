//! Link the libOS as a fixed-address static executable the kernel can load.
fn main() {
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=--image-base=0x400000");
}
