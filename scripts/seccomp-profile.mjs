#!/usr/bin/env node
// Writes deploy/seccomp-bwrap.json: the container runtime's default seccomp profile (containers-common's, as
// Debian's podman installs it at /usr/share/containers/seccomp.json) plus exactly the system calls bubblewrap
// needs to make a sandbox, allowed without CAP_SYS_ADMIN (which the container does not have):
//   sethostname, setdomainname  give the sandbox its own hostname (--hostname) in its UTS namespace
//   unshare, clone, clone3      make the user, pid, mount, network, IPC and UTS namespaces
//   setns                       join them (bubblewrap's child)
//   mount, umount2, pivot_root  build the sandbox's file tree (tmpfs, read-only binds) and switch to it
//   mount_setattr, open_tree, move_mount, fsopen, fsconfig, fsmount, fspick   the same with the new mount API
// Docker's own default profile allows all of these only with CAP_SYS_ADMIN; containers-common's already
// allows most of them (not sethostname / setdomainname). Each is allowed only inside the namespaces the
// process made: the kernel still refuses them on the container's own mounts and hostname.
// Usage: node scripts/seccomp-profile.mjs [source profile] > deploy/seccomp-bwrap.json
import { readFileSync } from 'node:fs';

const source = process.argv[2] ?? '/usr/share/containers/seccomp.json';
const profile = JSON.parse(readFileSync(source, 'utf8'));
const BWRAP = [
  'sethostname', 'setdomainname', 'unshare', 'clone', 'clone3', 'setns', 'mount', 'umount2', 'pivot_root',
  'mount_setattr', 'open_tree', 'move_mount', 'fsopen', 'fsconfig', 'fsmount', 'fspick',
];
// Drop these names from the rules that deny them or allow them only with a capability…
profile.syscalls = profile.syscalls
  .map((rule) => {
    const capped = rule.includes?.caps?.length || rule.excludes?.caps?.length;
    if (!capped || rule.args?.length) return rule;
    return { ...rule, names: rule.names.filter((n) => !BWRAP.includes(n)) };
  })
  .filter((rule) => rule.names.length > 0);
// …and allow them outright, in a rule of their own that says why.
profile.syscalls.push({
  names: BWRAP,
  action: 'SCMP_ACT_ALLOW',
  comment: 'bubblewrap: namespaces, mounts and the hostname of each sandbox (scripts/seccomp-profile.mjs)',
});
process.stdout.write(`${JSON.stringify(profile, null, 2)}\n`);
