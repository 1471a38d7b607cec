# oci2vm's initramfs: grows the root partition, then the root filesystem, into room added
# at the end of its disk after the build (`qemu-img resize`, a larger cloud volume).
# Sourced by /init (no code runs at load); also sourced by tests on the host, where
# grow_table runs against a disk image file.
#
# Busybox applets only: dd moves sectors, od reads little-endian fields, printf writes
# them, crc32 prints the IEEE CRC32 (the one GPT uses) of a file. The GPT rules are UEFI
# 2.10 section 5.3.2: HeaderCRC32 is over HeaderSize bytes with its own field zero,
# PartitionEntryArrayCRC32 over NumberOfPartitionEntries * SizeOfPartitionEntry bytes; the
# backup header (MyLBA and AlternateLBA swapped) is the disk's last sector, the backup
# entry array just before it. Only a disk laid out as oci2vm lays it out is touched:
# 512-byte sectors, root the last partition, a table that agrees with the kernel's view
# of it (and a GPT whose two CRCs check), at least 1 MiB free after the root.

GROW_TMP=/run/oci2vm/grow
GROW_MIN_SECTORS=2048   # 1 MiB: grow no partition by less, and end each on a MiB
GROW_FS_MIN=16777216    # bytes: a filesystem this much smaller than its device is grown
                        # (the kernel leaves out a last group too small for its metadata)
GROW_WHY=""

octal() { printf '\\%o' "$@"; } # printf escapes of the byte values given

le() { # VALUE COUNT: printf escapes of VALUE as COUNT little-endian bytes
	set -- "$1" "$2" ""
	while [ "$2" -gt 0 ]; do
		set -- $(($1 >> 8)) $(($2 - 1)) "$3$(octal $(($1 & 255)))"
	done
	echo "$3"
}

put() { # FILE OFFSET ESCAPES: write the bytes into FILE at OFFSET
	printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

crc() { # FILE: its CRC32, decimal
	set -- $(crc32 "$1")
	echo $((0x$1))
}

chs() { # LBA OVERFLOW: the escapes of LBA's CHS address on a 255-head, 63-sector disk,
	# OVERFLOW past cylinder 1023 (as oci2vm.disk.mbr.chs writes it)
	set -- $(($1 / 16065)) $(($1 % 16065)) "$2"
	if [ "$1" -gt 1023 ]; then echo "$3"; else octal $(($2 / 63)) $((($2 % 63 + 1) | (($1 >> 8) << 6))) $(($1 & 255)); fi
}

read_sectors() { dd if="$1" of="$4" bs=512 skip="$2" count="$3" 2>/dev/null; } # DEV LBA N FILE
write_sectors() { dd if="$1" of="$2" bs=512 seek="$3" conv=notrunc 2>/dev/null; } # FILE DEV LBA

why() { GROW_WHY=$*; return 1; }

# The GPT entries as "INDEX FIRST LAST" lines, unused entries left out.
gpt_extents() { # ENTRIES_FILE
	od -An -tu8 -w128 -v "$1" | {
		entry=0
		while read -r type1 type2 _guid1 _guid2 first last _rest; do
			[ "$type1$type2" = 00 ] || echo "$entry $first $last"
			entry=$((entry + 1))
		done
	}
}

# The new last LBA of the root partition on a disk of SECTORS sectors, ending before
# END (exclusive): on a MiB boundary, and at least 1 MiB beyond the old end.
new_end() { # END OLD_LAST
	set -- $(($1 / GROW_MIN_SECTORS * GROW_MIN_SECTORS - 1)) "$2"
	[ "$1" -ge $(($2 + GROW_MIN_SECTORS)) ] || return 1
	echo "$1"
}

gpt_header_ok() { # HEADER_FILE CRC: HeaderCRC32 checks
	head -c 92 "$1" >"$GROW_TMP/crc"
	put "$GROW_TMP/crc" 16 "$(le 0 4)"
	[ "$(crc "$GROW_TMP/crc")" = "$2" ]
}

gpt_seal() { # HEADER_FILE: set HeaderCRC32
	put "$1" 16 "$(le 0 4)"
	head -c 92 "$1" >"$GROW_TMP/crc"
	put "$1" 16 "$(le "$(crc "$GROW_TMP/crc")" 4)"
}

grow_gpt() { # DEV SECTORS PARTNO START SIZE
	t=$GROW_TMP dev=$1 last_lba=$(($2 - 1)) index=$(($3 - 1)) start=$4 old_last=$(($4 + $5 - 1))
	read_sectors "$dev" 1 1 "$t/hdr"
	[ "$(head -c 8 "$t/hdr")" = "EFI PART" ] || why "no GPT header" || return 1
	set -- $(od -An -tu4 -N92 -v "$t/hdr")
	[ "$#" = 23 ] && [ "$4" = 92 ] || why "a GPT header of an unexpected size" || return 1
	[ "$7.$8" = 1.0 ] || why "the GPT header does not say it is at LBA 1" || return 1
	gpt_header_ok "$t/hdr" "$5" || why "the GPT header's CRC32 does not check" || return 1
	alternate=$(($9 + (${10} << 32))) entries_lba=$((${19} + (${20} << 32)))
	count=${21} entry_size=${22} entries_crc=${23}
	[ "$entry_size" = 128 ] && [ $((count * 128 % 512)) = 0 ] && [ "$count" -gt "$index" ] ||
		why "a GPT entry array of an unexpected shape" || return 1
	array_sectors=$((count * 128 / 512))
	[ "$alternate" -lt "$last_lba" ] || why "the backup GPT is already at the disk's end" || return 1
	read_sectors "$dev" "$entries_lba" "$array_sectors" "$t/entries"
	[ "$(crc "$t/entries")" = "$entries_crc" ] || why "the GPT entries' CRC32 does not check" || return 1
	verdict=$(gpt_extents "$t/entries" | while read -r entry first last; do
		if [ "$entry" = "$index" ]; then
			[ "$first.$last" = "$start.$old_last" ] && echo found ||
				echo "GPT entry $((index + 1)) is not the kernel's root partition"
		elif [ "$last" -ge "$start" ]; then
			echo "the root is not the disk's last partition"
		fi
	done)
	case "$verdict" in
	found) ;;
	"") why "no GPT entry for the root partition" || return 1 ;;
	*) why "$(echo "$verdict" | grep -v -x found | head -n 1)" || return 1 ;;
	esac
	last_usable=$((last_lba - array_sectors - 1))
	new_last=$(new_end $((last_usable + 1)) "$old_last") || why "less than 1 MiB to grow into" || return 1

	put "$t/entries" $((index * 128 + 40)) "$(le "$new_last" 8)"
	entries_crc=$(crc "$t/entries")
	put "$t/hdr" 32 "$(le "$last_lba" 8)"
	put "$t/hdr" 48 "$(le "$last_usable" 8)"
	put "$t/hdr" 88 "$(le "$entries_crc" 4)"
	cp "$t/hdr" "$t/backup"
	put "$t/backup" 24 "$(le "$last_lba" 8)"
	put "$t/backup" 32 "$(le 1 8)"
	put "$t/backup" 72 "$(le $((last_lba - array_sectors)) 8)"
	gpt_seal "$t/hdr"
	gpt_seal "$t/backup"
	# The backup first: until the primary header is written, the old table stands whole.
	write_sectors "$t/entries" "$dev" $((last_lba - array_sectors))
	write_sectors "$t/backup" "$dev" "$last_lba"
	write_sectors "$t/entries" "$dev" "$entries_lba"
	write_sectors "$t/hdr" "$dev" 1
	# The protective MBR's record covers the disk (at most 2^32 - 1 sectors).
	protected=$((last_lba < 4294967295 ? last_lba : 4294967295))
	put "$t/mbr" 451 "$(chs "$protected" '\377\377\377')"
	put "$t/mbr" 458 "$(le "$protected" 4)"
	write_sectors "$t/mbr" "$dev" 0
	GROW_NEW_SIZE=$((new_last - start + 1))
}

grow_mbr() { # DEV SECTORS PARTNO START SIZE
	t=$GROW_TMP dev=$1 sectors=$2 index=$(($3 - 1)) start=$4 size=$5
	[ "$index" -lt 4 ] || why "the root is not a primary MBR partition" || return 1
	record=0
	while [ "$record" -lt 4 ]; do
		set -- $(od -An -tu4 -j$((446 + record * 16)) -N16 -v "$t/mbr")
		type=$((($2 >> 8) & 255)) first=$3 count=$4
		case "$type" in 5 | 15 | 133) why "an extended MBR partition" || return 1 ;; esac
		if [ "$record" = "$index" ]; then
			[ "$first.$count" = "$start.$size" ] || why "MBR record $((index + 1)) is not the kernel's root partition" || return 1
		elif [ "$type" != 0 ] && [ $((first + count)) -gt "$start" ]; then
			why "the root is not the disk's last partition" || return 1
		fi
		record=$((record + 1))
	done
	# An MBR numbers sectors in 32 bits.
	end=$((sectors < 4294967296 ? sectors : 4294967296))
	new_last=$(new_end "$end" $((start + size - 1))) || why "less than 1 MiB to grow into" || return 1
	GROW_NEW_SIZE=$((new_last - start + 1))
	put "$t/mbr" $((446 + index * 16 + 5)) "$(chs "$new_last" '\376\377\377')"
	put "$t/mbr" $((446 + index * 16 + 12)) "$(le "$GROW_NEW_SIZE" 4)"
	write_sectors "$t/mbr" "$dev" 0
}

# Grow partition PARTNO (START, SIZE sectors, as the kernel sees it) of DEV, a disk of
# SECTORS 512-byte sectors, to the disk's end; GROW_NEW_SIZE is its new size. Returns 1
# with GROW_WHY set when the disk is not one to touch or there is nothing to grow.
grow_table() { # DEV SECTORS PARTNO START SIZE
	mkdir -p "$GROW_TMP"
	read_sectors "$1" 0 1 "$GROW_TMP/mbr"
	set -- "$@" $(od -An -tu1 -j450 -N1 "$GROW_TMP/mbr") $(od -An -tx2 -j510 -N2 "$GROW_TMP/mbr")
	[ "$7" = aa55 ] || why "no partition table" || return 1
	if [ "$6" = 238 ]; then grow_gpt "$1" "$2" "$3" "$4" "$5"; else grow_mbr "$1" "$2" "$3" "$4" "$5"; fi
}

# -- at boot -------------------------------------------------------------------------------

# Before the root is mounted: grow its partition when there is room after it. An ordinary
# boot reads four sysfs files and returns.
grow_root_partition() {
	name=${ROOT_DEV##*/}
	part=/sys/class/block/$name
	[ -r "$part/partition" ] && cd -P "$part/.." 2>/dev/null || return 0
	disk=$PWD
	cd /
	read -r partno <"$part/partition"
	read -r start <"$part/start"
	read -r size <"$part/size"
	read -r sectors <"$disk/size"
	[ $((sectors - start - size)) -ge $((GROW_MIN_SECTORS + 33)) ] || return 0
	read -r logical <"$disk/queue/logical_block_size"
	if [ "$logical" != 512 ]; then
		say "root partition not grown: its disk has $logical-byte sectors"
		return 0
	fi
	if ! grow_table "/dev/${disk##*/}" "$sectors" "$partno" "$start" "$size"; then
		say "root partition not grown: $GROW_WHY"
		return 0
	fi
	sync
	blockdev --rereadpt "/dev/${disk##*/}" || say "could not re-read the partition table of /dev/${disk##*/}"
	tenths=0
	while [ "$tenths" -lt 50 ]; do # the partition's node is made anew
		read -r now <"$part/size" 2>/dev/null && [ "$now" = "$GROW_NEW_SIZE" ] && [ -b "$ROOT_DEV" ] && break
		sleep 0.1
		tenths=$((tenths + 1))
	done
	say "grew the root partition $ROOT_DEV from $((size / 2048)) MiB to $((GROW_NEW_SIZE / 2048)) MiB"
}

fs_short() { # is the ext4 on ROOT_DEV smaller than its device by GROW_FS_MIN or more?
	# /dev and /sys are under $ROOT by now
	read -r sectors <"$ROOT/sys/class/block/${ROOT_DEV##*/}/size" 2>/dev/null || return 1
	set -- $(od -An -tu4 -v -j1024 -N1024 "$ROOT$ROOT_DEV" 2>/dev/null) # the superblock
	[ "$#" = 256 ] && [ $((${15} & 65535)) = 61267 ] || return 1 # s_magic 0xEF53
	# s_blocks_count_lo, s_log_block_size; s_blocks_count_hi counts with INCOMPAT_64BIT
	blocks=$(($2 + ((${25} & 128) ? (${85} << 32) : 0)))
	[ $((sectors * 512 - (blocks << (10 + $7)))) -ge "$GROW_FS_MIN" ]
}

# After the root is mounted and /dev, /proc and /sys are moved under it: grow its ext4
# online with the root's own resize2fs, run in the guest (chrooted, where /proc/mounts
# shows the root at /). An ordinary boot reads the superblock and returns.
grow_root_filesystem() {
	fs_short || return 0
	mkdir -p /run/oci2vm
	resize=""
	for path in /usr/sbin/resize2fs /sbin/resize2fs; do
		[ -x "$ROOT$path" ] && resize=$path && break
	done
	if [ -z "$resize" ]; then
		grep -q 'x-systemd\.growfs' "$ROOT/etc/fstab" 2>/dev/null ||
			say "the root filesystem is smaller than its partition, and the root has no resize2fs to grow it"
		return 0
	fi
	[ "$CMD_RO" = 1 ] && mount -o remount,rw "$ROOT"
	if env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/chroot "$ROOT" "$resize" "$ROOT_DEV" >"$GROW_TMP.log" 2>&1; then
		say "grew the root filesystem to fill $ROOT_DEV"
	else
		say "could not grow the root filesystem: $(tail -n 1 "$GROW_TMP.log")"
	fi
	[ "$CMD_RO" = 1 ] && mount -o remount,ro "$ROOT"
	return 0
}
