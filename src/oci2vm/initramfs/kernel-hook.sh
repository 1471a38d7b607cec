#!/bin/sh
# oci2vm's kernel hook, installed by `oci2vm build` into an image that boots oci2vm's
# initramfs and has no initramfs generator (initramfs-tools, dracut...). It runs in the
# guest, from a Debian kernel package's maintainer scripts (linux-run-hooks, or run-parts
# on /etc/kernel/postinst.d and postrm.d), as: HOOK VERSION [IMAGE-PATH].
#
# postinst.d: builds /boot/initrd.img-VERSION from an oci2vm initramfs already in /boot:
# unpacked with the busybox oci2vm left in /usr/lib/oci2vm, its modules replaced by the
# same names from /lib/modules/VERSION (listed in /usr/lib/oci2vm/initramfs-modules, with
# their dependencies from the new modules.dep, uncompressed, in load order), repacked as
# newc cpio + gzip; then the initrd link beside a kernel link to this version is pointed
# at it (linux-update-symlinks makes it before the initrd exists; a link made by hand
# may not be). postrm.d: removes that initrd. With a generator present, it does nothing:
# the generator's own hook serves.
#
# OCI2VM_ROOT (unset in the guest) prefixes every path, for tests on a directory tree.

set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
R=${OCI2VM_ROOT:-}
BB=$R/usr/lib/oci2vm/busybox
WANTED=$R/usr/lib/oci2vm/initramfs-modules
GENERATORS="update-initramfs mkinitramfs dracut update-tirfs mkinitcpio"

say() { echo "oci2vm kernel hook: $*" >&2; }
fail() {
	say "error: $*"
	exit 1
}

[ "$#" -ge 1 ] && [ -n "$1" ] || fail "usage: $0 VERSION [IMAGE-PATH]"
version=$1
case "$version" in */* | .*) fail "malformed kernel version $version" ;; esac
initrd=/boot/initrd.img-$version

has_generator() {
	for tool in $GENERATORS; do
		for dir in /usr/sbin /usr/bin /sbin /bin; do
			[ -x "$R$dir/$tool" ] && return 0
		done
	done
	return 1
}

# The module directory of $version and the source initramfs, or fail.
modules_dir() {
	for base in /lib/modules /usr/lib/modules; do
		[ -f "$R$base/$version/modules.dep" ] && { echo "$R$base/$version"; return 0; }
	done
	fail "no modules.dep for $version (did depmod run?)"
}

# Unpacks the first oci2vm initramfs found into $1: the running kernel's first, then the
# others in /boot, newest name first; the one being replaced last.
unpack_source() {
	running=$(uname -r 2>/dev/null || :)
	for candidate in "$R/boot/initrd.img-$running" $(ls -r "$R/boot" | "$BB" grep '^initrd\.img-') "$R$initrd"; do
		case "$candidate" in initrd.img-*) candidate=$R/boot/$candidate ;; esac
		[ "$candidate" != "$R$initrd" ] || [ "$2" = last ] || continue
		[ -f "$candidate" ] || continue
		rm -rf "$1" && mkdir "$1"
		# Our initramfs ends in NUL padding, which gzip -d reports: the files decide.
		"$BB" gzip -dc <"$candidate" 2>/dev/null | (cd "$1" && "$BB" cpio -i -d -m 2>/dev/null) || :
		if [ -f "$1/etc/oci2vm/modules" ] && [ -x "$1/bin/busybox" ] && [ -f "$1/init" ]; then
			say "building $initrd from ${candidate#"$R"}"
			return 0
		fi
	done
	return 1
}

# The wanted modules and their dependencies as paths relative to the module directory,
# each after what it needs (modprobe's order). Built-in and absent names are skipped;
# ext4 must be one or the other.
closure() { # MODULES-DIR
	"$BB" awk -v wanted="$WANTED" -v builtin="$1/modules.builtin" '
	function norm(name) { gsub("-", "_", name); return name }
	function base(path,    n, parts, name) {
		n = split(path, parts, "/"); name = parts[n]; sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", name)
		return norm(name)
	}
	function visit(name, depth,    n, i, needs) {
		if (name in done || !(name in path)) return
		if (depth > 1000) { print "dependency cycle through " name > "/dev/stderr"; exit 3 }
		done[name] = 1
		n = split(deps[name], needs, " ")
		for (i = 1; i <= n; i++) visit(base(needs[i]), depth + 1)
		print path[name]
	}
	{
		colon = index($0, ":"); if (!colon) next
		p = substr($0, 1, colon - 1); m = base(p); path[m] = p; deps[m] = substr($0, colon + 1)
	}
	END {
		while ((getline line < builtin) > 0) built[base(line)] = 1
		if (!("ext4" in path) && !("ext4" in built)) { print "no ext4 module" > "/dev/stderr"; exit 2 }
		while ((getline line < wanted) > 0) {
			if (line == "") continue
			m = norm(line); if (!(m in built)) visit(m, 0)
		}
	}' "$1/modules.dep"
}

# Copies the module at relative path $2 of $1 into the tree $3, uncompressed; prints the
# path init.sh loads it from.
add_module() { # MODULES-DIR RELPATH TREE
	rel=$2
	case "$rel" in
	*.ko.xz) out=${rel%.xz} unpack="$BB xz -dc" ;;
	*.ko.gz) out=${rel%.gz} unpack="$BB gzip -dc" ;;
	*.ko.zst) out=${rel%.zst} unpack="zstd -dcq" ;;
	*) out=$rel unpack="cat" ;;
	esac
	dest=$3/lib/modules/$version/$out
	"$BB" mkdir -p "${dest%/*}"
	$unpack <"$1/$rel" >"$dest" || fail "cannot uncompress $1/$rel (for .zst: install zstd)"
	echo "/lib/modules/$version/$out"
}

point_links() {
	for dir in / /boot/; do
		link=$R${dir}vmlinuz
		[ -L "$link" ] || continue
		case "$(readlink "$link")" in */vmlinuz-"$version" | vmlinuz-"$version") ;; *) continue ;; esac
		target=boot/initrd.img-$version
		[ "$dir" = / ] || target=initrd.img-$version
		[ "$(readlink "$R${dir}initrd.img" 2>/dev/null || :)" = "$target" ] && continue
		ln -sfn "$target" "$R${dir}initrd.img"
		say "${dir}initrd.img now points to $target"
	done
}

build() {
	modules=$(modules_dir)
	[ -x "$BB" ] || fail "$BB is missing"
	[ -f "$WANTED" ] || fail "$WANTED is missing"
	work=$(mktemp -d "${TMPDIR:-/tmp}/oci2vm-initrd.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	tree=$work/tree
	unpack_source "$tree" "" || unpack_source "$tree" last ||
		fail "no oci2vm initramfs in /boot to build one for $version from"
	rm -rf "$tree/lib/modules"
	closure "$modules" >"$work/closure" || fail "cannot resolve the modules of $version"
	: >"$work/list"
	while read -r rel; do
		add_module "$modules" "$rel" "$tree" >>"$work/list"
	done <"$work/closure"
	cp "$work/list" "$tree/etc/oci2vm/modules"
	(cd "$tree" && "$BB" find . -mindepth 1 | "$BB" sed 's,^\./,,' | "$BB" sort |
		"$BB" cpio -o -H newc 2>/dev/null) | "$BB" gzip -c >"$work/initrd"
	[ -s "$work/initrd" ] || fail "could not pack the initramfs"
	mv "$work/initrd" "$R$initrd.oci2vm-new"
	chmod 0644 "$R$initrd.oci2vm-new"
	mv "$R$initrd.oci2vm-new" "$R$initrd"
	point_links
}

# What the maintainer script was called for (initramfs-tools' hooks read it the same way):
# an initrd is made on configure and removed on remove, not on upgrade or abort-*.
action=${DEB_MAINT_PARAMS:-}
action=${action%% *}
if has_generator; then
	exit 0
fi
case "$0" in
*/postrm.d/*) [ -n "$action" ] && [ "$action" != remove ] || rm -f "$R$initrd" ;;
*) [ -n "$action" ] && [ "$action" != configure ] || build ;;
esac
