#!/bin/sh
# Customizes a freshly debootstrapped Debian tree for banger. It runs inside
# the tree (chroot) during `banger image build`, as root, with the files it
# installs next to it in $BANGER_SETUP.
#
# Environment (set by banger):
#   BANGER_SETUP     directory holding this script, the units and hooks/
#                    (removed by banger afterwards)
#   BANGER_USER      default user, named after the owner ("root": none made)
#   BANGER_UID       uid for that user (empty: let useradd pick)
#   BANGER_TIMEZONE  e.g. Etc/UTC or Europe/Berlin
#   BANGER_LOCALE    e.g. C.UTF-8
#   BANGER_HOSTNAME  hostname until the agent sets the VM's own
set -eu

: "${BANGER_SETUP:?}" "${BANGER_USER:?}"
BANGER_UID=${BANGER_UID:-}
BANGER_TIMEZONE=${BANGER_TIMEZONE:-Etc/UTC}
BANGER_LOCALE=${BANGER_LOCALE:-C.UTF-8}
BANGER_HOSTNAME=${BANGER_HOSTNAME:-banger}
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

say() { echo "customize: $*"; }

units=/etc/systemd/system

# enable UNIT TARGET...: what `systemctl enable` does for [Install]
# WantedBy=, without needing a running systemd.
enable() {
	unit=$1
	shift
	for target in "$@"; do
		mkdir -p "$units/$target.wants"
		ln -sf "../$unit" "$units/$target.wants/$unit"
	done
}

say "guest agent"
test -x /usr/local/bin/banger-vsock-agent || { say "agent binary missing"; exit 1; }
install -m 0644 "$BANGER_SETUP/banger-vsock-agent.service" "$units/banger-vsock-agent.service"
enable banger-vsock-agent.service sysinit.target

say "ssh"
test -x /usr/sbin/sshd || { say "openssh-server is not installed"; exit 1; }
install -m 0644 "$BANGER_SETUP/banger-ssh-hostkeys.service" "$units/banger-ssh-hostkeys.service"
enable banger-ssh-hostkeys.service ssh.service multi-user.target
mkdir -p /etc/ssh/sshd_config.d
cat >/etc/ssh/sshd_config.d/banger.conf <<EOF
# banger: keys only; the owner's key is installed by the guest agent.
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF

say "user $BANGER_USER"
if [ "$BANGER_USER" != root ]; then
	if ! id "$BANGER_USER" >/dev/null 2>&1; then
		if [ -n "$BANGER_UID" ]; then
			useradd --create-home --shell /bin/bash --uid "$BANGER_UID" --user-group "$BANGER_USER"
		else
			useradd --create-home --shell /bin/bash --user-group "$BANGER_USER"
		fi
	fi
	# "*" rather than useradd's "!": no password can match, but the account
	# is not "locked", which would make sshd refuse key logins too.
	usermod -p '*' "$BANGER_USER"
	for g in sudo adm systemd-journal; do
		getent group "$g" >/dev/null && usermod -a -G "$g" "$BANGER_USER"
	done
	home=$(getent passwd "$BANGER_USER" | cut -d: -f6)
	install -d -m 0700 -o "$BANGER_USER" -g "$(id -gn "$BANGER_USER")" "$home/.ssh"
	sudoers=/etc/sudoers.d/90-banger-$BANGER_USER
	echo "$BANGER_USER ALL=(ALL:ALL) NOPASSWD: ALL" >"$sudoers"
	chmod 0440 "$sudoers"
	if command -v visudo >/dev/null; then
		visudo -c -q -f "$sudoers"
	fi
fi
install -d -m 0700 /root/.ssh

say "locale $BANGER_LOCALE, timezone $BANGER_TIMEZONE"
echo "LANG=$BANGER_LOCALE" >/etc/default/locale
if [ -e "/usr/share/zoneinfo/$BANGER_TIMEZONE" ]; then
	ln -sf "/usr/share/zoneinfo/$BANGER_TIMEZONE" /etc/localtime
	echo "$BANGER_TIMEZONE" >/etc/timezone
else
	say "no zoneinfo for $BANGER_TIMEZONE (tzdata not installed?): keeping UTC"
	ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime 2>/dev/null || true
	echo Etc/UTC >/etc/timezone
fi

say "system basics"
echo "$BANGER_HOSTNAME" >/etc/hostname
cat >/etc/hosts <<EOF
127.0.0.1	localhost
127.0.1.1	$BANGER_HOSTNAME
::1		localhost ip6-localhost ip6-loopback
EOF
# The initrd mounts the root read-write from root= on the kernel command
# line; this entry only gives systemd the options for its remount.
cat >/etc/fstab <<EOF
/dev/root	/	ext4	defaults,noatime	0	0
EOF
# An empty machine-id makes systemd create a fresh one in each VM.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id

if [ -d "$BANGER_SETUP/hooks" ]; then
	for hook in "$BANGER_SETUP"/hooks/*; do
		[ -f "$hook" ] || continue
		say "running hook $(basename "$hook")"
		chmod 0755 "$hook"
		(cd / && "$hook") || { say "hook $(basename "$hook") failed"; exit 1; }
	done
fi

say "cleaning up"
# Host keys made by package scripts would be shared by every VM.
rm -f /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /tmp/* 2>/dev/null || true
say "done"
