"""Vietnamese identifier rules and code tables; the tables are data files in mappings/vn/data.

Two province lists, on purpose:
- `cccd_provinces.json`: the 63 provinces before 2025-07-01, three-digit codes (Circular 07/2016/TT-BCA).
  CCCD numbers were issued with these codes and keep them, so digits 1-3 of a CCCD are checked here.
  Each entry also names the province of today that the old one is now part of.
- `provinces_2025.json`: the 34 provinces in force since 2025-07-01 (Resolution 202/2025/QH15), two-digit
  codes; addresses are coded against this list (XML 130 MATINH_CU_TRU).
Also: `ethnicity.json` (54 groups, codes 01-54), `sex.json` (HL7 0001 to FHIR gender, XML 130 GIOI_TINH and
the CCCD sex parity), `icd10_common.json` (display names; any well-formed ICD-10 code is accepted),
`vital_ranges.json` (physically plausible vital-sign ranges by LOINC code, with unit conversions; `vitals.py`),
`xml130_codes.json` (XML 130 code lists: KET_QUA_DTRI, MA_LOAI_RV, MA_LOAI_KCB, MA_NHOM, discharge dispositions, benefit
levels; each with its source).
"""
