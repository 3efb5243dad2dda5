# bench/plots.gp -- the plots of bench/run.sh, from the .dat files dss_bench
# writes. Usage: gnuplot -e "resdir='bench/results'" bench/plots.gp
if (!exists("resdir")) resdir = "bench/results"

set terminal pngcairo size 960,600 font ",11" noenhanced
set grid ytics
set key below

# Throughput vs producers, per consumer style (the ceilings; ours busy
# with poll() or dispatch(), and sleeping on the fd).
set output resdir."/throughput.png"
set title "Fire and forget: items/s vs producers (same run; 2 CPUs shared)"
set xlabel "producer threads"
set ylabel "items/s (millions)"
set logscale x 2
set xtics (1, 2, 4, 8)
set xrange [0.8:10]
set yrange [0:*]
set datafile missing "NaN"
plot resdir."/throughput.dat" using 1:($2/1e6) with linespoints lw 2 pt 7 title "ceiling: swap drain, pcall/item", \
     ''                        using 1:($3/1e6) with linespoints lw 2 pt 5 title "ceiling + args table/item", \
     ''                        using 1:($4/1e6) with linespoints lw 2 pt 9 title "ceiling, one item per lock", \
     ''                        using 1:($5/1e6) with linespoints lw 3 pt 13 title "ours: busy poll() + cb(unpack(args))", \
     ''                        using 1:($6/1e6) with linespoints lw 3 pt 11 title "ours: busy dispatch()", \
     ''                        using 1:($7/1e6) with linespoints lw 3 pt 15 title "ours: poll(2) on getfd(), dispatch()"

# Latency percentiles per wake-up mode (busy, eventfd ceiling, getfd +
# poll(2), wait(), UDP + select, luv).
unset logscale x
unset xrange
unset xtics
set xtics
set output resdir."/latency.png"
set title "Blocking round trip latency per wake-up mode (µs, log scale)"
set xlabel ""
set ylabel "µs"
set logscale y
set yrange [*:*]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -20
plot resdir."/latency.dat" using 2:xtic(1) title "p50", \
     ''                    using 3 title "p99", \
     ''                    using 4 title "p99.9"

# Deliver -> callback latency per event-loop helper (the E rows).
set output resdir."/loops.png"
set title "Event loops: deliver -> callback running in the loop (µs, log scale; loop asleep)"
plot resdir."/loops.dat" using 2:xtic(1) title "p50", \
     ''                  using 3 title "p99", \
     ''                  using 4 title "p99.9"
