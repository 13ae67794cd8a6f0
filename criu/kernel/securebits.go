package kernel

// include/uapi/linux/securebits.h

// SECBIT_KEEP_CAPS keeps the permitted capabilities across a change of
// all uids away from 0.
const SECBIT_KEEP_CAPS = 1 << 4
