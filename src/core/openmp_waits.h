#pragma once
// How long an OpenMP thread that reaches a barrier early spins before it sleeps, chosen for the
// whole process before libgomp loads its settings (it reads them once, before main()).
//
// libgomp's default spins ~300,000 times (several ms): when another program competes for the
// cores, the spinning steals the time the straggler needs (two 2-thread processes on 2 cores:
// 7.5 ms per parallel region instead of 25 us, the "30x slower" busy machine). Passive waits
// (sleep at once) cost a sleep and a wake-up per region instead: 75 us on a 2-core VM, where the
// woken vCPU has to be scheduled again by the host; a UNet step at 256x256 has ~560 regions.
// 1000 spins (25 us on Zen 3, PAUSE being ~25 ns there; ~45 us on Intel cores) is about that wake-up's
// cost: a thread that arrives a little early catches the others without sleeping, one that
// would wait longer sleeps.
//   quiet 2-core VM, per region: passive 76 us, 1000 spins 1.9 us, default 2 us;
//   two such processes at once:  passive 54-85 us, 1000 spins 88-131 us, default 7500 us.

namespace otter {

inline constexpr const char* kOpenMpSpinCount = "1000";

// Unless the user chose a wait policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT set), sets
// GOMP_SPINCOUNT=kOpenMpSpinCount and restarts the program with it (execv of /proc/self/exe);
// returns if it was set already, or if the restart fails (then libgomp's defaults apply).
void restart_with_short_openmp_spins(char** argv);

}  // namespace otter
