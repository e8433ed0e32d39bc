#!/usr/bin/perl
# Runs a command as the child of a child subreaper that reaps at once (scripts/soak.sh).
#
# CRIU restores a tree as its own child and exits: the restored server is reparented to the
# nearest subreaper, else to pid 1. Its next dump kills it, and its next restore needs its pid
# free, which it is only once that parent has reaped the zombie. Some inits reap orphans late
# (this project's VM init: 1.2-1.7 s), which then adds to every move of an already moved server.
# Under this subreaper the soak measures the migration, not the host's init.
use strict;
use warnings;
use POSIX ();

# prctl(PR_SET_CHILD_SUBREAPER, 1): x86_64 syscall 157, option 36 (elsewhere: run the command as is).
exec { $ARGV[0] } @ARGV or die "subreaper: exec $ARGV[0]: $!\n" if (POSIX::uname())[4] ne 'x86_64';
syscall(157, 36, 1, 0, 0, 0) == 0 or die "subreaper: prctl(PR_SET_CHILD_SUBREAPER): $!\n";
my $child = fork() // die "subreaper: fork: $!\n";
if ($child == 0) {
  exec { $ARGV[0] } @ARGV or die "subreaper: exec $ARGV[0]: $!\n";
}
# Signals for the command reach it; its exit status becomes ours once every orphan is reaped.
for my $signal (qw(INT TERM HUP)) {
  $SIG{$signal} = sub { kill $signal, $child };
}
my $status = 0;
for (;;) {
  my $pid = waitpid(-1, 0);
  if ($pid == -1) {
    last unless $!{EINTR};
    next;
  }
  $status = $? if $pid == $child;
}
exit(POSIX::WIFEXITED($status) ? POSIX::WEXITSTATUS($status) : 128 + POSIX::WTERMSIG($status));
