#!/bin/sh
# busybox udhcpc's event script in oci2vm's initramfs (udhcpc -s): configures the NIC from
# the lease and writes what init.sh hands to the workload: /run/oci2vm/resolv.conf and the
# address for /etc/hosts. udhcpc passes the lease in the environment (interface, ip,
# subnet, router, dns, domain), as busybox's examples/udhcp/simple.script reads it.
case "$1" in
deconfig)
	ifconfig "$interface" 0.0.0.0 up
	;;
bound | renew)
	ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
	for gateway in $router; do
		route add default gw "$gateway" dev "$interface" && break
	done
	{
		[ -n "$domain" ] && echo "search $domain"
		for server in $dns; do echo "nameserver $server"; done
	} >/run/oci2vm/resolv.conf
	echo "$ip" >/run/oci2vm/address
	;;
esac
exit 0
