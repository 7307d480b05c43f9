mod common;
use common::*;
use oxmm::mm::Prot;

#[test]
fn sequential_writes_take_a_ninth_of_the_faults() {
    let mut r = Rig::new();
    r.machine.sys().set_prefault(Some(3));
    let pages = 4096u64;
    let a = r.map(pages * PAGE, Prot::RW);
    let before = r.machine.vmstat().get("pgfault").unwrap();
    for i in 0..pages {
        r.cpu.write_u8(a + i * PAGE, 1).unwrap();
    }
    let faults = (r.machine.vmstat().get("pgfault").unwrap() - before) as u64;
    eprintln!("faults {faults} for {pages} pages; vmstat {:?}", r.machine.vmstat());
    assert!(faults * 8 <= pages + 64, "faults {faults}");
    assert_eq!(r.rss_anon(), pages);
}
