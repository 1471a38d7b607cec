#!/bin/sh
# oci2vm's initramfs /init, run by a static busybox sh as PID 1.
#
# Loads the modules listed in /etc/oci2vm/modules, finds the root named by the kernel
# command line's root= (UUID=, LABEL= or a device), mounts it on /newroot, then either
# hands over to the root's init (system mode) or stays PID 1 and runs the workload that
# /etc/oci2vm/spec describes (app mode). The spec is sh assignments written by
# oci2vm.initramfs.spec.render(): every value single-quoted; lists are strings of quoted
# words that are only ever expanded through `eval "set -- $LIST"`.
#
# App mode talks to the host over virtio-serial ports named org.oci2vm.* (stdin, stdout,
# stderr, control; with a tty, hvc0 carries all three): the kernel's console stays apart.
# Without them (a disk booted elsewhere) the workload gets the console.
#
# A disk enlarged after the build gets its root partition grown before the root is mounted
# and, in system mode, its root filesystem grown once mounted (growroot.sh).

export PATH=/bin
ROOT=/newroot
SPEC=/etc/oci2vm/spec
WORKLOAD_PID=/etc/oci2vm/workload.pid  # written by the starter of the workload
WORKLOAD_SIGNAL=/etc/oci2vm/workload.signal  # the signal that ended it (see deliver)
MODULES=/etc/oci2vm/modules
ROOT_WAIT_TENTHS=100 # how long the root device may take to appear: 10 s
GROWROOT=/etc/oci2vm/growroot.sh
CONTROL_FD_OPEN=0
set -f # no globbing of anything read from files or the command line

say() { echo "oci2vm-init: $*" >/dev/console; }

halt() {
	sync
	poweroff -f
	while :; do sleep 60; done # PID 1 must not exit
}

die() {
	say "error: $*"
	[ "$CONTROL_FD_OPEN" = 1 ] && echo "error $*" >&3
	halt
}

mount_basics() {
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
}

# Modules in load order. Those of 9p are loaded only for volumes (ext4's and 9p's are the
# largest, and each takes its time under emulation: signature check, relocation).
# Hyper-V's and Xen's drivers load only where the firmware (DMI's system vendor) or Xen's
# sysfs says the machine is theirs, or where nothing says what it is (no DMI): elsewhere
# they fail (ENODEV), and the kernel logs every symbol the drivers on top of them miss.
platform_drivers() {
	vendor="" xen=""
	[ -r /sys/class/dmi/id/sys_vendor ] && read -r vendor </sys/class/dmi/id/sys_vendor
	[ -r /sys/hypervisor/type ] && read -r xen </sys/hypervisor/type
	HYPERV=1 XEN=1
	[ -n "$vendor" ] || return 0
	[ "$vendor" = "Microsoft Corporation" ] || HYPERV=0
	[ "$vendor" = Xen ] || [ "$xen" = xen ] || XEN=0
}

load_modules() { # all|volumes
	[ -f "$MODULES" ] || return 0
	platform_drivers
	while read -r module; do
		case "$module" in
		"") continue ;;
		*/hv_*.ko*) [ "$HYPERV" = 1 ] && [ "$1" = all ] || continue ;;
		*/xen-*.ko*) [ "$XEN" = 1 ] && [ "$1" = all ] || continue ;;
		*/9p.ko | */9pnet.ko | */9pnet_virtio.ko | */netfs.ko | */fscache.ko) [ "$1" = volumes ] || continue ;;
		*) [ "$1" = all ] || continue ;;
		esac
		# A driver whose device is absent loads all the same; only a failure is told, but
		# Hyper-V's and Xen's drivers refuse to load (ENODEV) outside their hypervisor.
		insmod "$module" 2>/dev/null && continue
		case "$module" in
		*/hv_*.ko* | */xen-*.ko*) ;;
		*) say "could not load $module" ;;
		esac
	done <"$MODULES"
}

read_cmdline() {
	CMD_ROOT="" CMD_INIT="" CMD_RO=0
	for arg in $(cat /proc/cmdline); do
		case "$arg" in
		root=*) CMD_ROOT=${arg#root=} ;;
		init=*) CMD_INIT=${arg#init=} ;;
		ro) CMD_RO=1 ;;
		rw) CMD_RO=0 ;;
		esac
	done
}

find_root() {
	[ -n "$CMD_ROOT" ] || die "no root= on the kernel command line"
	tenths=0
	while :; do
		case "$CMD_ROOT" in
		UUID=* | LABEL=*) ROOT_DEV=$(findfs "$CMD_ROOT" 2>/dev/null) ;;
		*) ROOT_DEV=$CMD_ROOT ;;
		esac
		[ -n "$ROOT_DEV" ] && [ -b "$ROOT_DEV" ] && return 0
		[ "$tenths" -ge "$ROOT_WAIT_TENTHS" ] && break
		sleep 0.1
		tenths=$((tenths + 1))
	done
	die "root device $CMD_ROOT not found after $((ROOT_WAIT_TENTHS / 10)) s (is its disk driver in /etc/oci2vm/modules?)"
}

mount_root() {
	mkdir -p "$ROOT"
	options=rw
	[ "$CMD_RO" = 1 ] && [ "$SPEC_MODE" = system ] && options=ro
	mount -t ext4 -o "$options" "$ROOT_DEV" "$ROOT" || die "cannot mount $ROOT_DEV on /"
}

# -- system mode ---------------------------------------------------------------------------

hand_over() {
	init=${CMD_INIT:-$SPEC_INIT}
	[ -x "$ROOT$init" ] || [ -L "$ROOT$init" ] || die "no init $init on the root filesystem"
	for fs in dev proc sys; do
		if [ -d "$ROOT/$fs" ] && [ ! -L "$ROOT/$fs" ]; then
			mount -o move "/$fs" "$ROOT/$fs"
		else
			umount -l "/$fs"
		fi
	done
	grow_root_filesystem
	load_modules volumes # system mode: the root's init may mount 9p shares
	exec switch_root "$ROOT" "$init"
}

# -- paths of the image ----------------------------------------------------------------------

# Where PATH (absolute) leads inside the root, as the image's own processes would find it:
# each symlink on the way followed from the root (an absolute target starts again at the
# root, '..' stops there), as runc resolves a mount point or a working directory. A path
# built with "$ROOT$PATH" would follow an absolute link (Debian's /var/run -> /run) into
# this initramfs instead. The components from the first missing one on are kept as they
# are; 40 links at most, as the kernel allows (an error, and no output, past that).
root_path() { # PATH
	todo=$1 found="" hops=0
	while :; do
		while [ "${todo#/}" != "$todo" ]; do todo=${todo#/}; done
		[ -n "$todo" ] || break
		part=${todo%%/*}
		case "$todo" in */*) todo=${todo#*/} ;; *) todo="" ;; esac
		case "$part" in
		.) continue ;;
		..) found=${found%/*}; continue ;;
		esac
		if [ -L "$ROOT$found/$part" ]; then
			hops=$((hops + 1))
			[ "$hops" -le 40 ] || return 1
			link=$(readlink "$ROOT$found/$part")
			case "$link" in /*) found="" ;; esac
			todo=$link/$todo
		else
			found=$found/$part
		fi
	done
	echo "${found:-/}"
}

# A directory of the image (made where missing), as a path from this initramfs; empty when
# it cannot be one (a file in the way, a loop of links).
root_dir() { # PATH
	dir=$(root_path "$1") || return 1
	mkdir -p "$ROOT$dir" 2>/dev/null && [ -d "$ROOT$dir" ] && echo "$ROOT$dir"
}

# -- app mode ------------------------------------------------------------------------------

# What runc mounts in a container (/run and /tmp stay the image's own, as in docker: an
# image may ship /run/php or /var/run/postgresql, owned by its service's user).
mount_api_filesystems() {
	# (an image's /proc, /sys or /dev that is a link or a file is runc's error too)
	for dir in proc sys dev; do
		[ ! -L "$ROOT/$dir" ] && mkdir -p "$ROOT/$dir" 2>/dev/null && [ -d "$ROOT/$dir" ] ||
			fail_start "/$dir in the image is not a directory: cannot mount the $dir filesystem there"
	done
	mount -t proc proc "$ROOT/proc"
	mount -t sysfs sysfs "$ROOT/sys"
	mount -t devtmpfs devtmpfs "$ROOT/dev"
	mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$ROOT/dev/pts"
	mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$ROOT/dev/shm"
	# POSIX message queues, where runc mounts them (mq_open finds them without it; tools
	# that list queues look there).
	mkdir -p "$ROOT/dev/mqueue"
	mount -t mqueue -o nosuid,nodev,noexec mqueue "$ROOT/dev/mqueue" 2>/dev/null
	for link in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2; do
		[ -e "/dev/${link%%:*}" ] || ln -s "${link#*:}" "/dev/${link%%:*}"
	done
}

# Files the workload sees in place of the image's: written here (the initramfs is a tmpfs)
# and bind-mounted, so the image's own are not edited.
provide_file() { # NAME: /run/oci2vm/NAME over the root's /etc/NAME (or where it leads)
	target=$(root_path "/etc/$1") && dir=$(root_dir "${target%/*}") &&
		target=$dir/${target##*/} && { [ -e "$target" ] || : >"$target"; } &&
		mount -o bind "/run/oci2vm/$1" "$target" 2>/dev/null || say "could not provide /etc/$1"
}

setup_network() {
	mkdir -p /run/oci2vm
	hostname "$SPEC_HOSTNAME"
	ip link set lo up
	nic=""
	for dev in $(ls /sys/class/net); do
		[ "$dev" = lo ] || { nic=$dev; break; }
	done
	: >/run/oci2vm/resolv.conf
	address=127.0.1.1
	if [ -n "$nic" ]; then
		# udhcpc.sh configures the NIC and writes /run/oci2vm/resolv.conf and address.
		udhcpc -i "$nic" -f -q -n -t 4 -T 1 -s /etc/oci2vm/udhcpc.sh >/dev/null 2>&1 ||
			say "no DHCP lease on $nic"
		[ -s /run/oci2vm/address ] && address=$(cat /run/oci2vm/address)
	fi
	dns_settings # (--dns, --dns-search, --dns-option)
	printf '%s\n' "$SPEC_HOSTNAME" >/run/oci2vm/hostname
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n' \
		"$address" "$SPEC_HOSTNAME" >/run/oci2vm/hosts
	eval "set -- $SPEC_HOSTS" # --add-host: address, name
	while [ "$#" -ge 2 ]; do
		printf '%s\t%s\n' "$1" "$2" >>/run/oci2vm/hosts
		shift 2
	done
	for file in resolv.conf hosts hostname; do provide_file "$file"; done
}

# The workload's resolv.conf as docker writes it with --dns, --dns-search, --dns-option:
# the nameservers and search domains given in place of the network's ("." for no search
# domain), the options given added.
dns_settings() {
	conf=/run/oci2vm/resolv.conf
	[ -n "$SPEC_DNS$SPEC_DNS_SEARCH$SPEC_DNS_OPTIONS" ] || return 0
	{
		if [ -n "$SPEC_DNS_SEARCH" ]; then
			eval "set -- $SPEC_DNS_SEARCH"
			[ "$*" = . ] || echo "search $*"
		else
			grep '^search' "$conf"
		fi
		if [ -n "$SPEC_DNS" ]; then
			eval "set -- $SPEC_DNS"
			for server in "$@"; do echo "nameserver $server"; done
		else
			grep '^nameserver' "$conf"
		fi
		grep '^options' "$conf"
		eval "set -- $SPEC_DNS_OPTIONS"
		[ "$#" = 0 ] || echo "options $*"
	} >"$conf.new"
	cat "$conf.new" >"$conf"
}

mount_volumes() {
	eval "set -- $SPEC_VOLUMES"
	for word in "$@"; do # (9p's modules, for shares only)
		case "$word" in vol[0-9]* | fvol[0-9]*) load_modules volumes; break ;; esac
	done
	options=trans=virtio,version=9p2000.L,msize=262144
	while [ "$#" -ge 3 ]; do
		case "$1" in
		file*) bind_file "/etc/oci2vm/files/$1" "$2" ro || say "could not mount the file at $2" ;;
		fvol*) # a writable host file: its share holds it alone (SHARED_FILE), mounted
			# aside, where the workload's root does not reach, for as long as the bind takes
			share=/run/oci2vm-shares/$1
			mkdir -p "$share" && mount -t 9p -o "$options" "$1" "$share" &&
				bind_file "$share/f" "$2" rw || say "could not mount the file at $2"
			umount "$share" 2>/dev/null
			;;
		*)
			target=$(root_dir "$2") || fail_start "cannot mount a volume at $2: not a directory"
			dir_options=$options
			[ "$3" = ro ] && dir_options=$options,ro
			mount -t 9p -o "$dir_options" "$1" "$target" || say "could not mount the volume at $2"
			;;
		esac
		shift 3
	done
}

bind_file() { # SOURCE PATH ro|rw: a file bound over PATH (made if missing)
	target=$(root_path "$2") && [ ! -d "$ROOT$target" ] && [ ! -L "$ROOT$target" ] ||
		fail_start "cannot mount a file at $2: a directory is there"
	parent=$(root_dir "${target%/*}") || fail_start "cannot mount a file at $2: not a directory"
	[ -e "$ROOT$target" ] || : >"$ROOT$target" || fail_start "cannot make $2 to mount a file on"
	mount --bind "$1" "$ROOT$target" && { [ "$3" = rw ] || mount -o remount,bind,ro "$ROOT$target"; }
}

mount_tmpfs() { # --tmpfs: path, mount options
	eval "set -- $SPEC_TMPFS"
	while [ "$#" -ge 2 ]; do
		target=$(root_dir "$1") || fail_start "cannot mount a tmpfs at $1: not a directory"
		mount -t tmpfs -o "$2" tmpfs "$target" || say "could not mount a tmpfs at $1"
		shift 2
	done
}

port() { # the device of the virtio-serial port named $1, if there is one
	for dir in $(ls /sys/class/virtio-ports 2>/dev/null); do
		[ "$(cat "/sys/class/virtio-ports/$dir/name" 2>/dev/null)" = "$1" ] && echo "/dev/$dir"
	done
}

open_channels() {
	CONTROL=$(port org.oci2vm.control)
	if [ -n "$CONTROL" ]; then
		exec 3<>"$CONTROL"
		CONTROL_FD_OPEN=1
	else
		exec 3>/dev/null
	fi
	if [ "$SPEC_TTY" = 1 ] && [ -c /dev/hvc0 ]; then
		IN=/dev/hvc0 OUT=/dev/hvc0 ERR=/dev/hvc0
		return
	fi
	OUT=$(port org.oci2vm.stdout)
	ERR=$(port org.oci2vm.stderr)
	IN=$(port org.oci2vm.stdin)
	OUT=${OUT:-/dev/console} ERR=${ERR:-/dev/console}
	if [ "$SPEC_INTERACTIVE" != 1 ]; then
		IN=/dev/null
	elif [ -z "$IN" ]; then
		IN=/dev/console
	fi
	[ "$CONTROL_FD_OPEN" != 1 ] || [ "$OUT" = /dev/console ] || relay_streams
}

# The workload's streams are pipes, as docker's are: a virtio port can be open only once
# at a time, so /dev/stdout, a log linked to it (nginx's) or /dev/stdin reopened were
# refused (EBUSY). tee relays each output to its port and wc counts its bytes, which the
# exit status reports: the host answers once it has them all, and only then does the VM
# power off (what QEMU had not taken from the guest yet was lost). PID 1 holds the outputs'
# pipes open until the workload is over, so that the relays end with the last writer.
STREAMS=/run/oci2vm/streams
RELAYS="" IN_PORT=""
relay_streams() {
	mkdir -p "$STREAMS" && mkfifo "$STREAMS/out" "$STREAMS/err" || die "cannot make pipes"
	(tee "$OUT" | wc -c >"$STREAMS/out.count") <"$STREAMS/out" >/dev/null 3>&- &
	RELAYS="$RELAYS $!"
	(tee "$ERR" | wc -c >"$STREAMS/err.count") <"$STREAMS/err" >/dev/null 3>&- &
	RELAYS="$RELAYS $!"
	exec 4>"$STREAMS/out" 5>"$STREAMS/err"
	OUT=$STREAMS/out ERR=$STREAMS/err
	# stdin: an unnamed pipe (see start_workload), which reopens even after the end of
	# its input, where a named one waits for a writer to come
	[ "$IN" = /dev/null ] || IN_PORT=$IN
}

end_others() { # PID...: SIGKILL every process but PID 1, these and their children
	keep=" 1 $* "
	for pid in $(ls /proc); do
		case "$pid" in *[!0-9]* | 1) continue ;; esac
		case "$keep" in *" $pid "*) continue ;; esac
		{ read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
		set -- ${stat##*) } # state, ppid, ...
		case "$keep" in *" $2 "*) continue ;; esac
		kill -9 "$pid" 2>/dev/null
	done
}

end_relays() { # the workload's last writers gone, its output relayed to the end: COUNTS
	exec 4>&- 5>&-
	end_others $RELAYS
	end_others $RELAYS # (what was forked while the first pass ran)
	wait $RELAYS
	COUNTS=" $(cat "$STREAMS/out.count") $(cat "$STREAMS/err.count")"
}

# docker's user rules: NAME or UID, optionally :GROUP or :GID; names from the root's
# /etc/passwd and /etc/group; an unknown numeric id is taken as is (group 0, HOME /). A
# user found in /etc/passwd without a :GROUP also gets the groups /etc/group lists it in
# (runc's supplementary groups): `members` says whether there is any.
resolve_user() {
	user=${SPEC_USER%%:*} group="" members=""
	case "$SPEC_USER" in *:*) group=${SPEC_USER#*:} ;; esac
	[ -n "$user" ] || user=0
	entry=$(awk -F: -v u="$user" '$1 == u || $3 == u { print; exit }' "$ROOT/etc/passwd" 2>/dev/null)
	if [ -n "$entry" ]; then
		uid=$(echo "$entry" | awk -F: '{ print $3 }')
		gid=$(echo "$entry" | awk -F: '{ print $4 }')
		home=$(echo "$entry" | awk -F: '{ print $6 }')
	else
		case "$user" in *[!0-9]*) fail_start "unable to find user $user: no matching entries in passwd file" ;; esac
		uid=$user gid=0 home=/
	fi
	if [ -z "$group" ]; then
		[ -n "$entry" ] || return 0
		members=$(awk -F: -v n="${entry%%:*}" '{ k = split($4, m, ",")
			for (i = 1; i <= k; i++) if (m[i] == n) { print $3; exit } }' "$ROOT/etc/group" 2>/dev/null)
		return 0
	fi
	entry=$(awk -F: -v g="$group" '$1 == g || $3 == g { print $3; exit }' "$ROOT/etc/group" 2>/dev/null)
	if [ -n "$entry" ]; then
		gid=$entry
	else
		case "$group" in *[!0-9]*) fail_start "unable to find group $group: no matching entries in group file" ;; esac
		gid=$group
	fi
}

# A signal passed on to the workload. As its namespace's PID 1 it would ignore one it
# neither handles nor ignores itself (the kernel's rule for an init, which leaves docker's
# Ctrl-C doing nothing to most programs): it ends by it instead, as a program that is no
# init would (SIGKILL, the signal noted for its exit status: 128 + N, as docker reports a
# program killed by N). A handler that restores the default and raises the signal again
# to end by it (node's for SIGINT and SIGTERM, a script's `trap - TERM; kill -TERM $$`)
# would be ignored the same way: watched for a while, and its end given.
workload_pid() { # sets pid; the host hears "started" just before the starter writes it
	tries=0
	until pid=$(cat "$WORKLOAD_PID" 2>/dev/null) && [ -n "$pid" ]; do
		[ $tries -lt 30 ] || return 1
		sleep 0.1
		tries=$((tries + 1))
	done
}

deliver() { # SIGNAL PID
	before=$(disposition "$1" "$2")
	if [ "$before" = default ]; then
		ended_by "$1" "$2"
		return
	fi
	kill "-$1" "$2" 2>/dev/null
	[ "$before" != caught ] || watch_reraise "$1" "$2" &
}

watch_reraise() { # SIGNAL PID: a handler that then restores the default ends the workload
	tries=0
	while [ $tries -lt 50 ] && sleep 0.2; do
		case $(disposition "$1" "$2") in
		default) ended_by "$1" "$2"; break ;;
		gone) break ;;
		esac
		tries=$((tries + 1))
	done
}

# A ^C or ^\ typed under -t: the guest's terminal has sent its signal to the foreground
# process group, and the kernel dropped it if that is the workload and it does not handle
# it (as for deliver's). Only when the terminal makes signals of those keys (not in raw
# mode) and the workload is in the foreground (not a shell's job).
tty_signal() { # SIGNAL PID
	stty -F /dev/hvc0 -a 2>/dev/null | awk '/(^| )-isig( |;|$)/ { f = 1 } END { exit !f }' &&
		return 0
	set -- "$1" "$2" $(awk '{ sub(/.*\) /, ""); print $3, $6 }' "/proc/$2/stat" 2>/dev/null)
	[ $# -eq 4 ] && [ "$3" = "$4" ] || return 0
	case $(disposition "$1" "$2") in
	default) ended_by "$1" "$2" ;;
	caught) watch_reraise "$1" "$2" & ;;
	esac
}

disposition() { # SIGNAL PID: default (it would end the program, were it no init), caught, ignored, other or gone
	case "$1" in 17|18|19|20|21|22|23|28) echo other; return ;; esac # CHLD CONT STOP TSTP TTIN TTOU URG WINCH
	set -- "$1" $(awk '/^State:/ { s = $2 } /^Sig(Ign|Cgt):/ { m = m " " $2 }
		END { if (s != "" && s != "Z" && s != "X") print m }' "/proc/$2/status" 2>/dev/null)
	if [ $# -ne 3 ]; then
		echo gone
	elif [ $((0x$3 >> ($1 - 1) & 1)) = 1 ]; then
		echo caught
	elif [ $((0x$2 >> ($1 - 1) & 1)) = 1 ]; then
		echo ignored
	else
		echo default
	fi
}

ended_by() { # SIGNAL PID: the workload ends as that signal would end it
	echo "$1" >"$WORKLOAD_SIGNAL"
	kill -9 "$2" 2>/dev/null
}

# The last step of a start by start-stop-daemon, by our sh as the workload's user: what
# exec would refuse, told as docker tells it, else the program in its place.
USER_EXEC='[ -x "$0" ] && [ ! -d "$0" ] || {
	echo "oci2vm: exec: \"$0\": permission denied" >&2; exit 126; }
exec "$0" "$@"'

fail_start() { # like docker when the container cannot start: a message and status 125
	echo "oci2vm: $*" >"$ERR"   # (docker run's for a daemon error: an unknown user, group)
	finish 125
}

# The program a bare name runs, as runc finds it: the first in the workload's PATH, looked
# up inside the root (its own symlinks). busybox would otherwise answer to the names of its
# applets itself (ls, sh, id, env...: it prefers them to the PATH), in place of the image's.
lookup_program() { # NAME PATH
	/bin/busybox env -i PATH="$2" /bin/busybox nsenter -r"$ROOT" -F -- which "$1" 2>/dev/null
}

in_root() { # APPLET ARGS: this initramfs's busybox run inside the root, as root
	/bin/busybox env -i /bin/busybox nsenter -r"$ROOT" -w"$WORKDIR" -F -- \
		/proc/1/root/bin/busybox "$@" 2>/dev/null
}

# What execve itself refuses in a program that exists and may be run, which busybox's exec
# (glibc's execvp, ash's exec) would run through /bin/sh instead or tell in its own words:
# the reason, as runc tells it, or nothing. Neither ELF nor "#!": exec format error (a
# script without its #! line); a #! interpreter that is not there: no such file or
# directory (a #! line with DOS line ends names "/bin/sh\r").
exec_refusal() { # PROGRAM
	set -- "$1" $(in_root head -c 4 "$1" | od -An -tx1)
	case "$2$3$4$5" in
	7f454c46) return ;;
	2321*) ;;
	*) echo "exec format error"; return ;;
	esac
	line=$(in_root head -c 256 "$1" | head -n 1)
	line=${line#??}
	while :; do
		case "$line" in
		[" 	"]*) line=${line#?} ;;
		*) break ;;
		esac
	done
	interpreter=${line%%[" 	"]*}
	cr=$(printf '\r')
	if [ -z "$interpreter" ]; then
		echo "exec format error"
	elif ! in_root test -e "$interpreter"; then
		case "$interpreter" in
		*"$cr") echo "no such file or directory (its #! line ends in a carriage return: DOS line ends)" ;;
		*) echo "no such file or directory (its #! interpreter $interpreter does not exist)" ;;
		esac
	elif ! in_root test -x "$interpreter" || in_root test -d "$interpreter"; then
		echo "permission denied (its #! interpreter $interpreter cannot be run)"
	fi
}

# The workload's resource limits (SPEC_LIMITS: FLAG SOFT HARD ..., checked by oci2vm) as
# commands for its starter, not for PID 1 (a cpu limit would end the VM): the soft limit
# first where the hard one allows it, then the hard one, then the soft one; docker's
# status 125 if one cannot be set.
limit_commands() {
	eval "set -- $SPEC_LIMITS"
	while [ $# -ge 3 ]; do
		printf 'ulimit -S -%s %s 2>/dev/null; ' "$1" "$2"
		printf '{ ulimit -H -%s %s && ulimit -S -%s %s; } || exit 125; ' "$1" "$3" "$1" "$2"
		shift 3
	done
}

# The workload's pipes and terminal become its user's, as runc's fixStdioPermissions
# makes them and as runc gives the container's user its terminal, so that a user other
# than root opens /dev/stdout again (/dev/null stays as it is).
stdio_owner() {
	printf 'for fd in 0 1 2; do { [ -p /proc/self/fd/$fd ] || [ -t $fd ]; } && chown %s:%s /proc/self/fd/$fd; done; ' \
		"$uid" "$gid"
}

start_workload() {
	# docker makes a missing working directory, and refuses one that cannot be.
	WORKDIR=$(root_dir "$SPEC_WORKDIR") ||
		fail_start "cannot use $SPEC_WORKDIR as the working directory: not a directory"
	eval "set -- $SPEC_ARGV"
	name=$1 program=$1
	case "$name" in
	*/*) ;;
	*)
		program=$(lookup_program "$name" "$SPEC_PATH")
		case "$program" in
		/*) ;;
		*) echo "oci2vm: exec: \"$name\": executable file not found in \$PATH" >"$ERR"
		   finish 127 ;;
		esac
		;;
	esac
	# As runc reports them (start-stop-daemon would exit 1 for either): looked at as root
	# inside the root, from the working directory.
	if ! in_root test -e "$program"; then
		echo "oci2vm: exec: \"$program\": stat $program: no such file or directory" >"$ERR"
		finish 127
	elif ! in_root test -x "$program" || in_root test -d "$program"; then
		echo "oci2vm: exec: \"$program\": permission denied" >"$ERR"
		finish 126
	fi
	refusal=$(exec_refusal "$program") # (after the start, as runc's: status 1)
	if [ -n "$refusal" ]; then
		echo "oci2vm: exec $program: $refusal" >"$ERR"
		finish 1
	fi
	if [ "$SPEC_READ_ONLY" = 1 ]; then # --read-only, once every mount point exists
		mount -o remount,ro "$ROOT" || fail_start "cannot make the root filesystem read-only"
	fi
	eval "set -- $SPEC_ENV"
	[ "$SPEC_HAS_HOME" = 1 ] || set -- "$@" "HOME=${home:-/}"
	set -- env -i "$@" /bin/busybox nsenter -r"$ROOT" -w"$WORKDIR" -F
	if [ -n "$members" ]; then
		# nsenter -G sets one group; start-stop-daemon -c calls initgroups(), which reads
		# the current root's /etc/group: started inside the root, an applet of this
		# initramfs's busybox, which runs them from /proc/self/exe (no file of the image
		# runs as root first). As the user, our sh then refuses what exec would with
		# docker's 126 (start-stop-daemon's status would be 1) and execs the program.
		set -- "$@" -- start-stop-daemon -S -q -p /proc/oci2vm-none -c "$uid:$gid" \
			-x /proc/self/exe -a sh -- -c "$USER_EXEC" "$program"
	else
		set -- "$@" -S "$uid" -G "$gid" -- "$program"
	fi
	eval "set -- \"\$@\" $SPEC_ARGS"
	# The host passes signals on the control port: "signal N" sends N to the workload
	# (whose pid its starter leaves in WORKLOAD_PID), "stop" its stop signal.
	: >"$WORKLOAD_PID"
	(
		while read -r request; do
			workload_pid || continue
			case "$request" in
			"signal "[1-9]*) deliver "${request#signal }" "$pid" ;;
			"tty-signal "[1-9]*) tty_signal "${request#tty-signal }" "$pid" ;;
			stop) deliver "$SPEC_STOP_SIGNAL" "$pid" ;;
			kill) kill -9 "$pid" 2>/dev/null ;;
			esac
		done
	) <&3 4>&- 5>&- &
	READER=$!
	# In the foreground: a non-interactive shell starts a background command with SIGINT
	# and SIGQUIT ignored, which exec keeps (Ctrl-C under -it, a StopSignal of INT or QUIT
	# would do nothing); docker's workload starts with every signal at its default.
	# PID 1 of a PID namespace of its own, as in a container: getpid() is 1 (s6-overlay's
	# /init insists on it), orphans are its to reap, its end ends every process it
	# started, and its /proc (mounted in a mount namespace of its own) shows them alone.
	# Its starter, the namespace's first process, leaves its pid as seen from here. (A
	# kernel without PID namespaces, an image's own or one given, runs it as a child.)
	namespaces="unshare -p -f -m --propagation private --"
	unshare -p -f -m true 2>/dev/null || namespaces=""
	setsid=""
	[ "$IN" != /dev/hvc0 ] || setsid="setsid -c " # the terminal's session leader
	set -- $namespaces sh -c "$(limit_commands)$(stdio_owner)"'
		read -r pid _ </proc/self/stat && echo "$pid" >"$0"
		[ "$$" != 1 ] || mount -t proc proc "$1/proc" 2>/dev/null; shift
		exec '"$setsid"'"$@"' "$WORKLOAD_PID" "$ROOT" "$@"
	say "the workload started: $program" # (what `oci2vm check` of an app disk waits for)
	# (a stop before this ends the VM at once: nothing would take it)
	[ "$CONTROL_FD_OPEN" != 1 ] || echo started >&3
	# In a subshell: ash reports a job killed by a signal ("Killed") on the stderr its
	# command had, which would add a line to the workload's own; the subshell's is the
	# console's.
	if [ "$IN" = /dev/hvc0 ]; then # (the workload takes the terminal: its starter's parent
		# would die by a Ctrl-C that the workload ignores)
		("$@" <"$IN" >"$OUT" 2>"$ERR" 3>&- 4>&- 5>&-)
	elif [ -n "$IN_PORT" ]; then # cat in the background: the pipeline ends with the workload
		({ cat "$IN_PORT" 3>&- 4>&- 5>&- & } | "$@" >"$OUT" 2>"$ERR" 3>&- 4>&- 5>&-)
	else # (not the control port: the workload could fake "exit 0" there)
		("$@" <"$IN" >"$OUT" 2>"$ERR" 3>&- 4>&- 5>&-)
	fi
}

finish() { # STATUS: report it, stop everything, power off
	COUNTS=""
	[ -z "$RELAYS" ] || end_relays
	echo "exit $1$COUNTS" >&3
	[ "$CONTROL_FD_OPEN" = 1 ] || say "the workload exited with status $1"
	[ -z "$COUNTS" ] || read -r _ <&3 # "drained": the host has every byte (or is gone)
	kill -9 -1 2>/dev/null # every process but this one: what is left of the workload
	sync
	umount -r "$ROOT" 2>/dev/null
	halt
}

run_app() {
	open_channels # first: a mount that cannot be made is told on the workload's stderr
	mount_api_filesystems
	setup_network
	mount_volumes
	mount_tmpfs
	resolve_user
	# Until the workload ends: ash reaps every child meanwhile, the orphans re-parented
	# to PID 1 included.
	start_workload
	status=$?
	ended_by=$(cat "$WORKLOAD_SIGNAL" 2>/dev/null)
	[ "$status" != 137 ] || [ -z "$ended_by" ] || status=$((128 + ended_by))
	kill "$READER" 2>/dev/null
	finish "$status"
}

mount_basics
[ -f "$SPEC" ] && . "$SPEC"
. "$GROWROOT"
SPEC_MODE=${SPEC_MODE:-system} SPEC_INIT=${SPEC_INIT:-/sbin/init}
load_modules all
read_cmdline
find_root
grow_root_partition
mount_root
case "$SPEC_MODE" in
app) run_app ;;
*) hand_over ;;
esac
